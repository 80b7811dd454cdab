"""What each part imports: the channel loads the way Rasa loads it, and the actions and the
emulator run where Rasa is not installed (a separate action server image, a test suite)."""

import subprocess
import sys

import pytest

from rasa_sparkcentral.protocol import CHANNEL_NAME, CREDENTIALS_KEY


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_rasa_finds_the_channel_class_by_its_credentials_key() -> None:
    result = run(
        "from rasa.shared.utils.common import class_from_module_path as load\n"
        f"cls = load({CREDENTIALS_KEY!r})\n"
        "print(cls.name(), cls.__module__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [CHANNEL_NAME, "rasa_sparkcentral.channel"]


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("rasa_sparkcentral", ("rasa", "rasa_sdk", "sanic", "tensorflow")),
        # rasa_sdk itself runs on sanic
        ("rasa_sparkcentral.actions", ("rasa", "tensorflow")),
        ("rasa_sparkcentral.testing.emulator", ("rasa", "rasa_sdk", "sanic", "tensorflow")),
    ],
)
def test_light_modules_do_not_import_rasa(module: str, forbidden: tuple) -> None:
    result = run(
        f"import sys, {module}\n"
        f"heavy = sorted(m for m in {forbidden!r} if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_unknown_attribute_is_an_attribute_error() -> None:
    import rasa_sparkcentral

    with pytest.raises(AttributeError):
        rasa_sparkcentral.NoSuchThing  # noqa: B018
    assert rasa_sparkcentral.__version__
