"""Issue 15: `rasa-sparkcentral init` on a fresh `rasa init` project, then `doctor`.

One project for the whole module: `rasa init --no-prompt` (it trains its own model, about
a minute), `rasa-sparkcentral init`, `rasa data validate`, `rasa train`, then an action
server and `rasa run` talking to an in-process emulator. The fault tests copy the project
and break one thing each; `doctor` must name it with its fix and exit non-zero.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from rasa_sparkcentral.detail_slots import DETAIL_SLOTS
from rasa_sparkcentral.doctor import action_answers_advice
from rasa_sparkcentral.project_snippets import ACTIONS_IMPORT, RESPONSES
from rasa_sparkcentral.rasa_edition import installed_rasa, installed_version
from rasa_sparkcentral.testing import processes as servers
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import get_tracker, say_and_wait

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parent.parent
# The example bot's small pipeline: trains in seconds instead of the default's minute.
FAST_CONFIG = REPO_ROOT / "example_bot" / "config.yml"
SOURCE_SUFFIXES = (".yml", ".yaml", ".py")
WRONG_SECRET = "00" * 32


def _run(argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=servers.base_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"{argv} failed ({log}):\n{result.stderr[-3000:]}"
    return result.stdout


def _init(project: Path, log: Path) -> str:
    return _run([sys.executable, "-m", "rasa_sparkcentral", "init", str(project)], project, log)


def _sources(project: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in sorted(project.rglob("*"))
        if p.is_file() and p.suffix in SOURCE_SUFFIXES and ".rasa" not in p.parts
    }


@dataclass
class Fresh:
    """The `rasa init` project after `rasa-sparkcentral init`, before any other change."""

    path: Path
    logs: Path
    before: dict[str, bytes]
    after: dict[str, bytes]
    first_output: str


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Fresh:
    base = tmp_path_factory.mktemp("init")
    project, logs = base / "bot", base / "logs"
    project.mkdir()
    logs.mkdir()
    _run(
        [sys.executable, "-m", "rasa", "init", "--no-prompt", "--init-dir", str(project)],
        base,
        logs / "rasa-init.log",
    )
    shutil.rmtree(project / "models")
    shutil.copyfile(FAST_CONFIG, project / "config.yml")
    before = _sources(project)
    output = _init(project, logs / "init-1.log")
    return Fresh(project, logs, before, _sources(project), output)


@dataclass
class Deployed:
    project: Path
    logs: Path
    emulator: SparkcentralEmulator
    rasa: servers.ManagedProcess
    env: dict[str, str]

    @property
    def rasa_url(self) -> str:
        assert self.rasa.url is not None
        return self.rasa.url


@pytest.fixture(scope="module")
def trained(fresh: Fresh) -> Path:
    _run(
        [sys.executable, "-m", "rasa", "data", "validate"], fresh.path, fresh.logs / "validate.log"
    )
    _run(
        [sys.executable, "-m", "rasa", "train", "--fixed-model-name", "bot", "--out", "models"],
        fresh.path,
        fresh.logs / "train.log",
    )
    return fresh.path / "models" / "bot.tar.gz"


@pytest.fixture(scope="module")
def action_server(fresh: Fresh, trained: Path) -> Iterator[servers.ManagedProcess]:
    # where this test deploys it: endpoints.yml gets the free port (a deployment edit)
    process = servers.action_server(fresh.path, servers.free_port(), fresh.logs / "actions.log")
    endpoints = fresh.path / "endpoints.yml"
    text = endpoints.read_text()
    assert "http://localhost:5055/webhook" in text
    endpoints.write_text(text.replace("http://localhost:5055", str(process.url)))
    with process:
        yield process


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def deployed(
    fresh: Fresh, trained: Path, action_server: servers.ManagedProcess
) -> AsyncIterator[Deployed]:
    emulator = SparkcentralEmulator()
    await emulator.start(host="127.0.0.1", port=0)
    credentials = fresh.path / "credentials.yml"
    text = credentials.read_text()
    assert "  # base_url: ${SPARKCENTRAL_BASE_URL}" in text
    credentials.write_text(text.replace("# base_url:", "base_url:"))  # the emulator's line
    env = {
        "SPARKCENTRAL_CLIENT_ID": emulator.client_id,
        "SPARKCENTRAL_CLIENT_SECRET": emulator.client_secret,
        "SPARKCENTRAL_SHARED_SECRET": emulator.shared_secret,
        "SPARKCENTRAL_BASE_URL": emulator.base_url,
    }
    port = servers.free_port()
    rasa = servers.rasa_server(
        fresh.path,
        trained,
        port,
        credentials,
        fresh.path / "endpoints.yml",
        fresh.logs / "rasa.log",
        env=env,
    )
    rasa.start()
    try:
        await rasa.wait_ready_async()
        emulator.webhook_url = f"{rasa.url}/webhooks/sparkcentral/webhook"
        yield Deployed(fresh.path, fresh.logs, emulator, rasa, env)
    finally:
        await rasa.stop_async()
        await emulator.stop()


async def _doctor(
    deployed: Deployed, project: Path | None = None, *args: str, **env: str
) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rasa_sparkcentral",
        "doctor",
        str(project or deployed.project),
        "--rasa-url",
        deployed.rasa_url,
        *args,
        env=servers.base_env({**deployed.env, **env}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


def _copy(deployed: Deployed, tmp_path: Path) -> Path:
    target = tmp_path / "bot"
    shutil.copytree(
        deployed.project, target, ignore=shutil.ignore_patterns("models", ".rasa", "__pycache__")
    )
    return target


def _failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


# --------------------------------------------------------------------------- init


def test_init_adds_and_only_adds(fresh: Fresh) -> None:
    changed = {name for name, data in fresh.after.items() if fresh.before.get(name) != data}
    assert changed == {
        "credentials.yml",
        "endpoints.yml",
        "actions/actions.py",
        "domain.yml",
        "data/nlu.yml",
        "data/rules.yml",
    }
    for name in changed:
        old = fresh.before[name].decode().splitlines()
        new = fresh.after[name].decode().splitlines()
        removed = [line for line in difflib.ndiff(old, new) if line.startswith("- ")]
        assert removed == [], f"{name} lost or moved lines: {removed}"
    for name in changed:
        assert name in fresh.first_output
    assert "rasa_sparkcentral.SparkcentralInput" in fresh.after["credentials.yml"].decode()
    assert ACTIONS_IMPORT in fresh.after["actions/actions.py"].decode()


def test_init_twice_changes_nothing(fresh: Fresh) -> None:
    before = _sources(fresh.path)
    output = _init(fresh.path, fresh.logs / "init-2.log")
    assert output.startswith("Nothing to change")
    assert _sources(fresh.path) == before


# --------------------------------------------------------------------------- the bot plays


async def test_the_bot_plays_vip_question_handoff_handback_resolve(deployed: Deployed) -> None:
    emu = deployed.emulator
    vip_greeting = RESPONSES["utter_greet_vip"].replace("{sparkcentral_primary_identifier}", "Ann")
    # an inception bot answers the contact's first message (it does not greet first)
    started = await emu.start_conversation(name="Ann", vip=True)
    cid = started.conversation_id
    assert await say_and_wait(emu, cid, "hello") == [vip_greeting]
    # anyone else gets the bot's own greeting (its stories), as before init
    other = (await emu.start_conversation(name="Bob")).conversation_id
    assert await say_and_wait(emu, other, "hello") == ["Hey! How are you?"]

    assert await say_and_wait(emu, cid, "are you a bot?") == ["I am a bot, powered by Rasa."]

    assert await say_and_wait(emu, cid, "I want to talk to a person") == [
        RESPONSES["utter_handoff"]
    ]
    await emu.wait_for_queue(cid, "new")
    assert emu.actions_for(cid)[-1] == {"complete": "HANDOVER"}

    # an agent delegates the conversation back: the bot asks the first question
    before = len(emu.bot_texts(cid))
    assert (await emu.hand_back(cid, "CONVERSATION_DELEGATED")).status == 200
    assert (await emu.wait_for_bot_messages(cid, before + 1))[before:] == [vip_greeting]

    assert await say_and_wait(emu, cid, "that's all, you can close this") == [
        RESPONSES["utter_resolved"]
    ]
    await emu.wait_for_queue(cid, "resolved")
    assert emu.actions_for(cid)[-1] == {"complete": "RESOLVED"}


async def test_every_details_slot_init_declares_is_filled(deployed: Deployed) -> None:
    """init declares every details slot (the example bot only those it reads): through
    real Rasa, each gets its field of the assignment's channel details."""
    emu = deployed.emulator
    details = json.loads(
        (REPO_ROOT / "tests" / "fixtures" / "chatlayer_channel_details.json").read_text()
    )
    profile = details["contactProfile"]
    started = await emu.start_conversation(
        contact_profile=profile,
        contact_attributes=details["contactAttributes"],
        medium=details["medium"],
        channel={"id": details["channelId"], "name": "Twitter DM"},
    )
    cid = started.conversation_id
    vip_greeting = RESPONSES["utter_greet_vip"].replace(
        "{sparkcentral_primary_identifier}", profile["primaryIdentifier"]
    )
    assert await say_and_wait(emu, cid, "hello") == [vip_greeting]
    slots = (await get_tracker(deployed.rasa_url, cid))["slots"]
    filled = {name: value for name, value in slots.items() if name in DETAIL_SLOTS}
    whole = filled.pop("sparkcentral_channel_details")
    assert (whole["channelId"], whole["contactProfile"]) == (details["channelId"], profile)
    assert filled == {
        "sparkcentral_conversation_id": cid,
        "sparkcentral_channel_id": details["channelId"],
        "sparkcentral_channel_name": "Twitter DM",
        "sparkcentral_medium": "twit",
        "sparkcentral_contact_id": profile["id"],
        "sparkcentral_medium_contact_profile_id": profile["mediumContactProfileId"],
        "sparkcentral_primary_identifier": "@johan_dm",
        "sparkcentral_secondary_identifier": "Johan De Meyer",
        "sparkcentral_picture_url": profile["pictureUrl"],
        "sparkcentral_vip": True,
        "sparkcentral_contact_attributes": {
            a["attribute"]: a["value"] for a in details["contactAttributes"]
        },
    }


# --------------------------------------------------------------------------- doctor


async def test_doctor_all_well(deployed: Deployed) -> None:
    emu = deployed.emulator
    tokens = emu.token_requests
    code, lines = await _doctor(deployed, None, "--online")
    assert _failures(lines) == [], "\n".join(lines)
    assert code == 0
    assert emu.token_requests == tokens + 1  # --online: one token request
    output = "\n".join(lines)
    assert emu.client_secret not in output and emu.shared_secret not in output
    # Rasa Open Source with jsonschema 4 (as pip installs them) gets a note on what each
    # action server answer costs: advice, not a problem; Rasa Pro does not
    advised = action_answers_advice(installed_rasa(), installed_version("jsonschema"))
    notes = ["note action answers"] if advised else []
    assert [line.split(":")[0] for line in lines if not line.startswith("ok")] == [
        *notes,
        "All is well.",
    ]


async def test_doctor_no_action_endpoint(deployed: Deployed, tmp_path: Path) -> None:
    project = _copy(deployed, tmp_path)
    endpoints = project / "endpoints.yml"
    text = endpoints.read_text()
    endpoints.write_text(
        text.replace("action_endpoint:", "#action_endpoint:").replace(
            '\n  url: "http', '\n#  url: "http'
        )
    )
    code, lines = await _doctor(deployed, project)
    assert code != 0
    assert _failures(lines)[:1] == [
        "FAIL endpoints.yml: no action_endpoint, so our actions never run: add action_endpoint "
        "with url http://localhost:5055/webhook to endpoints.yml (run `rasa-sparkcentral init`)"
    ]


async def test_doctor_actions_not_imported(deployed: Deployed, tmp_path: Path) -> None:
    project = _copy(deployed, tmp_path)
    actions = project / "actions" / "actions.py"
    actions.write_text(actions.read_text().replace(ACTIONS_IMPORT, ""))
    code, lines = await _doctor(deployed, project)
    assert code != 0
    assert _failures(lines) == [
        "FAIL actions package: does not register action_sparkcentral_channel_details, "
        "action_handoff_to_sparkcentral, action_resolve_conversation: add "
        f"`{ACTIONS_IMPORT}` to actions/actions.py"
    ]


async def test_doctor_wrong_shared_secret(deployed: Deployed) -> None:
    code, lines = await _doctor(deployed, None, SPARKCENTRAL_SHARED_SECRET=WRONG_SECRET)
    assert code != 0
    failures = _failures(lines)
    assert len(failures) == 1 and failures[0].startswith("FAIL signed webhook:")
    assert "check shared_secret" in failures[0]
    assert WRONG_SECRET not in "\n".join(lines)


async def test_doctor_wrong_base_url(deployed: Deployed) -> None:
    closed = f"http://127.0.0.1:{servers.free_port()}"
    code, lines = await _doctor(deployed, None, SPARKCENTRAL_BASE_URL=closed)
    assert code != 0
    failures = _failures(lines)
    assert len(failures) == 1 and failures[0].startswith(f"FAIL Sparkcentral API: {closed} ")
    assert failures[0].endswith("check base_url and region (no base_url for real Sparkcentral)")


async def test_doctor_missing_intent(deployed: Deployed, tmp_path: Path) -> None:
    project = _copy(deployed, tmp_path)
    domain = project / "domain.yml"
    domain.write_text(domain.read_text().replace("  - resolve\n", ""))
    code, lines = await _doctor(deployed, project)
    assert code != 0
    assert _failures(lines) == ["FAIL domain: lacks intent resolve: run `rasa-sparkcentral init`"]


async def test_doctor_slots_left_out_are_a_note(deployed: Deployed, tmp_path: Path) -> None:
    """A bot may leave out the details slots it does not read: not a problem, a note."""
    project = _copy(deployed, tmp_path)
    left_out = ["sparkcentral_picture_url", "sparkcentral_secondary_identifier"]
    edited = 0
    for path in [project / "domain.yml", *sorted((project / "domain").glob("*.yml"))]:
        if not path.is_file():
            continue
        domain = yaml.safe_load(path.read_text())
        slots = domain.get("slots") or {}
        if any(name in slots for name in left_out):
            for name in left_out:
                slots.pop(name, None)
            path.write_text(yaml.safe_dump(domain, sort_keys=False, allow_unicode=True))
            edited += 1
    assert edited
    code, lines = await _doctor(deployed, project)
    assert _failures(lines) == [], "\n".join(lines)
    assert code == 0
    notes = [line for line in lines if line.startswith("note slots:")]
    assert notes == [
        "note slots: sparkcentral_secondary_identifier, sparkcentral_picture_url not declared, "
        "so not filled (fine if no rule, response or action reads them; each filled slot "
        "costs Rasa a little on every turn: README: What the slots cost)"
    ]
