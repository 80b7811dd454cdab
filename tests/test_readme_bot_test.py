"""The README's bot-test example passes as printed, with the ``sparkcentral_bot`` plugin.

The blocks marked ``<!-- bot-test: FILE -->`` in README.md are written, unchanged, into a
copy of example_bot (with its trained model), and pytest runs there in a subprocess, in
pytest-asyncio's auto mode as printed and in strict mode with the README's one-line marker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.pytest_plugin import channel_settings_from_credentials
from tests.support import BOT_DIR, REPO_ROOT

BLOCK = re.compile(r"<!-- bot-test: (?P<file>[^ ]+) -->\n```[a-z]*\n(?P<code>.*?)\n```", re.S)
PLUGINS = (
    "-p no:sparkcentral_emulator -p no:sparkcentral_bot -p rasa_sparkcentral.testing.pytest_plugin"
)
STRICT_MARK = "import pytest\n\npytestmark = pytest.mark.asyncio\n\n"


def readme_blocks(text: str) -> Dict[str, str]:
    """``{file name: code}`` of every marked block of the README."""
    return {m["file"]: m["code"] + "\n" for m in BLOCK.finditer(text)}


def bot_project(target: Path, model: Path, files: Dict[str, str]) -> Path:
    """A copy of example_bot with ``model`` in models/ and ``files`` written into it."""
    shutil.copytree(
        BOT_DIR, target, ignore=shutil.ignore_patterns("models", ".rasa", "__pycache__")
    )
    (target / "models").mkdir()
    shutil.copy2(model, target / "models" / model.name)
    for name, code in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")
    return target


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = processes.base_env({"PYTEST_ADDOPTS": PLUGINS})
    env.pop("PYTEST_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def passed(result: subprocess.CompletedProcess[str]) -> int:
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    found = re.fullmatch(r"=*\s*(\d+) passed[^,]* in [\d.]+s(?: \([\d:]+\))?\s*=*", summary)
    return int(found.group(1)) if found else -1


def test_the_readme_marks_an_ini_and_a_test_file() -> None:
    blocks = readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert set(blocks) == {"pytest.ini", "tests/test_bot.py"}
    assert "asyncio_default_test_loop_scope = session" in blocks["pytest.ini"]
    assert blocks["tests/test_bot.py"].count("\nasync def test_") == 2


def test_channel_settings_come_from_the_bots_credentials_without_keys() -> None:
    assert channel_settings_from_credentials(BOT_DIR) == {"conversation_started_intent": "greet"}


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_the_readme_bot_test_passes_as_printed(
    mode: str, trained_model: Path, tmp_path: Path
) -> None:
    blocks = readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    tests = blocks["tests/test_bot.py"].count("\nasync def test_")
    if mode == "strict":  # the README's advice for strict mode: one marker per module
        blocks["tests/test_bot.py"] = STRICT_MARK + blocks["tests/test_bot.py"]
    project = bot_project(tmp_path / "my_bot", trained_model, blocks)
    result = run_pytest(project, "-o", f"asyncio_mode={mode}")
    report = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    assert passed(result) == tests, report


def test_a_wrong_expectation_in_the_example_fails(trained_model: Path, tmp_path: Path) -> None:
    blocks = readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    test_file = blocks["tests/test_bot.py"]
    assert "9:00 to 18:00" in test_file
    blocks["tests/test_bot.py"] = test_file.replace("9:00 to 18:00", "8:00 to 18:00")
    project = bot_project(tmp_path / "my_bot", trained_model, blocks)
    result = run_pytest(project)
    report = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert result.returncode == 1, report
    assert "1 failed, 1 passed" in result.stdout, report
    assert "8:00 to 18:00" in result.stdout, report


def test_without_a_model_the_fixture_says_how_to_get_one(tmp_path: Path) -> None:
    blocks = readme_blocks((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    project = tmp_path / "my_bot"
    shutil.copytree(BOT_DIR, project, ignore=shutil.ignore_patterns("models", ".rasa"))
    for name, code in blocks.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(code, encoding="utf-8")
    result = run_pytest(project, "-x")
    assert result.returncode != 0
    assert "no model to run" in result.stdout and "--sparkcentral-train" in result.stdout, (
        result.stdout
    )
    assert not (project / "models").exists()  # nothing was trained


SETTINGS_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
sparkcentral_bot_dir = bots/shop
sparkcentral_channel_settings =
    conversation_started_intent = greet
    max_attempts = 3
"""

SETTINGS_TEST = """\
import pytest


@pytest.fixture(scope="session")
def sparkcentral_bot_options(sparkcentral_bot_options):
    return {**sparkcentral_bot_options, "name": "shop-bot"}


async def test_the_settings_reach_the_stack(sparkcentral_bot, sparkcentral_conversation):
    stack = sparkcentral_bot.stack
    assert (stack.bot_dir.name, stack.model.name, stack.name) == ("shop", "m.tar.gz", "shop-bot")
    assert stack.channel_settings == {"conversation_started_intent": "greet", "max_attempts": 3}
    assert stack.action_url is not None
    convo = sparkcentral_conversation
    assert convo.greeting == ["Hi! How can I help you today?"]
    texts = await convo.say("question about my bill")  # the whole turn: text, then topics
    assert len(texts) == 1 and texts[0].startswith("Invoices are sent on the first working")
    assert "billing" in convo.topics
"""


def test_ini_and_command_line_settings(trained_model: Path, tmp_path: Path) -> None:
    """Bot folder and channel settings from the ini file (the bot's credentials.yml is
    gone), the model from the command line, and an overridden options fixture."""
    root = tmp_path / "project"
    bot = root / "bots" / "shop"
    shutil.copytree(BOT_DIR, bot, ignore=shutil.ignore_patterns("models", ".rasa", "__pycache__"))
    (bot / "credentials.yml").unlink()
    (root / "artifacts").mkdir()
    shutil.copy2(trained_model, root / "artifacts" / "m.tar.gz")
    (root / "pytest.ini").write_text(SETTINGS_INI, encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "test_settings.py").write_text(SETTINGS_TEST, encoding="utf-8")
    result = run_pytest(root, "--sparkcentral-model", "artifacts/m.tar.gz")
    report = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    assert passed(result) == 1, report
