"""`rasa-sparkcentral init` on layouts other than `rasa init`'s (no servers, no training)."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rasa_sparkcentral.project_files import (
    UnsetVariableError,
    domain_facts,
    find_project,
    load_yaml_text,
    read_yaml,
)
from rasa_sparkcentral.project_init import init_project
from rasa_sparkcentral.project_snippets import (
    ACTIONS,
    ACTIONS_IMPORT,
    CREDENTIALS_LINES,
    DETAIL_SLOTS,
    RESPONSES,
)
from rasa_sparkcentral.rasa_edition import RasaEdition, installed_rasa
from rasa_sparkcentral.testing import processes as servers
from rasa_sparkcentral.yaml_text import YamlEditError

OSS = RasaEdition("rasa", "3.6.21")

FOLDER_INTENTS = """\
version: "3.1"
# my intents, in my order
intents:
- greet   # said first
- goodbye
"""
FOLDER_RESPONSES = """\
version: "3.1"
responses:
    utter_greet:
        - text: "Hello!"   # keep me
    utter_goodbye:
        - text: "Bye"
"""
NLU = """\
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hi
    - hello
- intent: goodbye
  examples: |
    - bye
"""
RULES = """\
version: "3.1"
rules:
- rule: hello
  steps:
  - intent: greet
  - action: utter_greet
- rule: bye
  steps:
  - intent: goodbye
  - action: utter_goodbye
# trailing comment of the user
"""
CONFIG = (Path(__file__).resolve().parent.parent / "example_bot" / "config.yml").read_text()


def _folder_project(root: Path) -> Path:
    files = {
        "domain/intents.yml": FOLDER_INTENTS,
        "domain/responses.yml": FOLDER_RESPONSES,
        "data/nlu.yml": NLU,
        "data/rules.yml": RULES,
        "config.yml": CONFIG,
        "actions/__init__.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _only_added(old: str, new: str) -> bool:
    diff = difflib.ndiff(old.splitlines(), new.splitlines())
    return not [line for line in diff if line.startswith("- ")]


def test_domain_folder_layout_gets_its_own_file_and_validates(tmp_path: Path) -> None:
    root = _folder_project(tmp_path)
    before = _snapshot(root)
    changes = init_project(root, OSS)
    after = _snapshot(root)
    assert "domain/sparkcentral.yml: added intents human_handoff, resolve" in changes
    # the user's domain files are untouched; ours holds the rest
    assert after["domain/intents.yml"] == FOLDER_INTENTS
    assert after["domain/responses.yml"] == FOLDER_RESPONSES
    ours = read_yaml(root / "domain" / "sparkcentral.yml")
    assert "greet" not in ours["intents"]  # declared by the user already
    assert set(ours["actions"]) == set(ACTIONS)
    assert set(ours["responses"]) == set(RESPONSES)
    facts = domain_facts(find_project(root))
    assert set(DETAIL_SLOTS) <= set(facts.slots)
    for name in ("data/nlu.yml", "data/rules.yml", "actions/__init__.py"):
        assert _only_added(before[name], after[name]), name
    assert after["data/rules.yml"].startswith(RULES.rstrip("\n").rsplit("\n", 1)[0])
    assert "from rasa_sparkcentral.actions import *" in after["actions/__init__.py"]

    assert init_project(root, OSS) == []
    assert _snapshot(root) == after

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rasa",
            "data",
            "validate",
            "--domain",
            "domain",
            "--fail-on-warnings",
        ],
        cwd=root,
        env=servers.base_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    problems = [line for line in result.stderr.splitlines() if "UserWarning" in line]
    # our two goodbyes are said by our actions, which rasa's validator cannot see
    assert all("utter_handoff" in p or "utter_resolved" in p for p in problems), problems
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("edition", "mapping"),
    [
        (RasaEdition("rasa", "3.6.21"), {"type": "custom", "action": ACTIONS[0]}),
        (RasaEdition("rasa-pro", "3.11.4"), {"type": "custom", "action": ACTIONS[0]}),
        (
            RasaEdition("rasa-pro", "3.12.0"),
            {"type": "controlled", "run_action_every_turn": ACTIONS[0]},
        ),
    ],
)
def test_slot_mappings_follow_the_installed_rasa(
    tmp_path: Path, edition: RasaEdition, mapping: dict[str, str]
) -> None:
    root = _folder_project(tmp_path)
    init_project(root, edition)
    slots = read_yaml(root / "domain" / "sparkcentral.yml")["slots"]
    assert slots["sparkcentral_vip"]["mappings"] == [mapping]
    assert slots["sparkcentral_vip"]["influence_conversation"] is True


def test_installed_rasa_is_read_from_the_distribution() -> None:
    edition = installed_rasa()
    assert edition is not None and edition.distribution == "rasa"
    assert edition.version.startswith("3.") and not edition.controlled_slots


def test_a_flow_style_key_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    root = _folder_project(tmp_path)
    shutil.rmtree(root / "domain")
    (root / "domain.yml").write_text('version: "3.1"\nintents: [greet, goodbye]\n')
    before = _snapshot(root)
    with pytest.raises(YamlEditError, match="'intents' is written on one line"):
        init_project(root, OSS)
    assert _snapshot(root) == before


def test_cli_modules_do_not_import_rasa() -> None:
    code = (
        "import sys\n"
        "import rasa_sparkcentral.cli, rasa_sparkcentral.doctor, rasa_sparkcentral.project_init\n"
        "roots = ('rasa', 'rasa_sdk', 'sanic')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in roots))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=servers.base_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_the_channel_does_not_import_the_cli() -> None:
    code = (
        "import sys\n"
        "import rasa_sparkcentral.channel\n"
        "names = ('cli', 'doctor', 'project_init', 'project_files', 'yaml_text')\n"
        "ours = [m for m in sys.modules if m.startswith('rasa_sparkcentral.')]\n"
        "print(sorted(m for m in ours if m.split('.')[-1] in names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=servers.base_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def _readme_blocks(section_title: str, language: str) -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split(section_title, 1)[1].split("\n### ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_readme_manual_snippets_are_what_init_writes(tmp_path: Path) -> None:
    root = _folder_project(tmp_path)
    shutil.rmtree(root / "domain")
    (root / "domain.yml").write_text('version: "3.1"\n')
    shutil.rmtree(root / "data")  # so that init writes data/sparkcentral.yml
    init_project(root, OSS)
    domain, nlu, rules = (
        load_yaml_text(block) for block in _readme_blocks("### 3. Domain", "yaml")
    )
    written = read_yaml(root / "domain.yml")
    for key in ("intents", "actions", "responses", "slots"):
        assert domain[key] == written[key], key
    assert nlu["nlu"] == [
        item
        for item in read_yaml(root / "data" / "sparkcentral.yml")["nlu"]
        if item["intent"] != "greet"  # the README assumes the bot has greet already
    ]
    assert rules["rules"] == read_yaml(root / "data" / "sparkcentral.yml")["rules"]
    assert _readme_blocks("### 3. Domain", "python") == [ACTIONS_IMPORT + "\n"]
    credentials = load_yaml_text(_readme_blocks("### 2. `credentials.yml`", "yaml")[0])
    ours = load_yaml_text("\n".join(CREDENTIALS_LINES))
    assert credentials == ours


def test_crlf_files_keep_their_line_endings(tmp_path: Path) -> None:
    root = _folder_project(tmp_path)
    for name in ("data/nlu.yml", "data/rules.yml"):
        path = root / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    before = {n: (root / n).read_bytes() for n in ("data/nlu.yml", "data/rules.yml")}
    init_project(root, OSS)
    for name, old in before.items():
        new = (root / name).read_bytes()
        assert new.startswith(old.rstrip(b"\r\n").rsplit(b"\r\n", 1)[0]), name
        assert new.count(b"\n") == new.count(b"\r\n"), name
    assert init_project(root, OSS) == []


def test_reading_yaml_ignores_the_env_tag_rasa_registers(tmp_path: Path) -> None:
    """In a process that imported Rasa (rasa run, a test suite), ``${VAR}`` stays text until
    we expand it: an unset variable is reported by name, not raised by Rasa."""
    import rasa.shared.utils.io  # noqa: F401  (registers Rasa's !env_var tag)

    path = tmp_path / "credentials.yml"
    path.write_text("key: ${RASA_SPARKCENTRAL_UNSET_FOR_TEST}\n")
    assert read_yaml(path) == {"key": "${RASA_SPARKCENTRAL_UNSET_FOR_TEST}"}
    with pytest.raises(UnsetVariableError) as caught:
        read_yaml(path, expand_env=True)
    assert caught.value.names == ["RASA_SPARKCENTRAL_UNSET_FOR_TEST"]
