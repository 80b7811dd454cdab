"""Every module of ours imports under Rasa Pro, and Rasa finds the channel class by the
key users write in credentials.yml."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT

IMPORT_ALL = REPO_ROOT / "scripts" / "import-all.py"


def run(code: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *options, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )


def test_every_module_imports_without_deprecation_from_our_code() -> None:
    result = subprocess.run(
        [sys.executable, str(IMPORT_ALL)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "rasa_sparkcentral.channel" in report["modules"]
    assert "rasa_sparkcentral.actions" in report["modules"]
    assert "rasa_sparkcentral.client" in report["modules"]
    assert report["ours"] == []


def test_warnings_as_errors_for_our_modules() -> None:
    # the `python -W error::DeprecationWarning` check, limited to our modules: Rasa Pro and
    # its dependencies raise their own deprecation warnings at import time
    # Rasa installs warning filters of its own when imported: import it (and what our
    # modules import) first, so that ours is the filter in force
    code = (
        "import warnings, rasa.core.channels.channel, rasa_sdk, sanic, aiohttp\n"
        "warnings.filterwarnings('error', category=DeprecationWarning,"
        " module=r'rasa_sparkcentral(\\.|$)')\n"
        "import rasa_sparkcentral.channel, rasa_sparkcentral.actions, rasa_sparkcentral.client\n"
        "print('ok')"
    )
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_rasa_pro_finds_the_channel_by_its_credentials_key() -> None:
    result = run(
        "from rasa.shared.utils.common import class_from_module_path as load\n"
        "from rasa.core.channels.channel import InputChannel\n"
        "cls = load('rasa_sparkcentral.SparkcentralInput')\n"
        "assert issubclass(cls, InputChannel)\n"
        "import rasa, sanic, aiohttp\n"
        "print(cls.name(), rasa.__version__, sanic.__version__, aiohttp.__version__)"
    )
    assert result.returncode == 0, result.stderr
    name, rasa_version, sanic_version, aiohttp_version = result.stdout.split()
    assert name == "sparkcentral"
    assert int(rasa_version.split(".")[0]) == 3 and int(rasa_version.split(".")[1]) >= 19
    assert int(sanic_version.split(".")[0]) >= 22
    assert tuple(int(p) for p in aiohttp_version.split(".")[:2]) >= (3, 14)
