"""Issue 6 "Nothing lost, nothing twice", on one real ``rasa run`` (in-memory channel
state) + action server + emulator:

- a delivery repeated (one after the other, at once, or later as a retry) is handled once:
  one user event in Rasa's tracker, one set of replies at Sparkcentral;
- 50 messages sent without waiting for replies are all answered, in order;
- with 429/5xx bursts, random failures and a token expiring mid-run, every reply arrives
  once and in order;
- a graceful stop (SIGTERM) answers the messages still queued before the process exits;
- no log of the whole run (rasa run at --debug, the action server at --debug, this
  process) holds a secret: client secret, shared secret, or any access token issued.

The instance has its own emulator (faults are injected there), its own action server
(at --debug) and distinctive secrets. Other e2e tests in this module share it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List

import pytest
import pytest_asyncio

from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import get_tracker, response_text, settle
from tests.support import BOT_DIR, BotStarter, RasaHandle

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")
SHIPPING = response_text("utter_shipping")
QUESTIONS = [("what are your opening hours?", HOURS), ("how long does shipping take?", SHIPPING)]
INBOUND = "INBOUND_MESSAGE_RECEIVED"
STARTED = "CONVERSATION_STARTED"
TOKEN_PATH = "/virtual-agent/oauth2/token"
CONVERSATIONS = "/virtual-agent/conversations/"

# Distinctive secrets, new for every run: easy to find in a log if one leaks.
CLIENT_ID = "reliability-client"
CLIENT_SECRET = "cs-" + secrets.token_urlsafe(24)
SHARED_SECRET = secrets.token_hex(32)
MARKER = "test-process log capture check"


@dataclass
class Setup:
    emulator: SparkcentralEmulator
    rasa: RasaHandle
    action_server: processes.ManagedProcess
    test_log: io.StringIO


@pytest.fixture(scope="module")
def test_process_log() -> Iterator[io.StringIO]:
    """Every Python log record of this process (any logger, DEBUG and up) while the
    module runs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def setup(
    start_bot: BotStarter, server_logs: Path, test_process_log: io.StringIO
) -> AsyncIterator[Setup]:
    emulator = await start_bot.new_emulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, shared_secret=SHARED_SECRET
    )
    actions = processes.action_server(
        BOT_DIR, processes.free_port(), server_logs / "action-server-reliability.log"
    )
    actions.argv.append("--debug")
    async with actions:
        rasa = await start_bot(
            name="rasa-reliability",
            emulator=emulator,
            action_url=f"{actions.url}/webhook",
            extra_args=["--debug"],
            backoff_base=0.01,
            backoff_max=0.1,
            max_attempts=10,
        )
        yield Setup(emulator, rasa, actions, test_process_log)
        await rasa.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "setup" in request.fixturenames:
        request.getfixturevalue("setup").emulator.faults.reset()


async def _start(emu: SparkcentralEmulator) -> str:
    started = await emu.start_conversation()
    assert started.status == 200
    assert await emu.wait_for_bot_messages(started.conversation_id, 1) == [GREETING]
    return started.conversation_id


def _says(cid: str, text: str) -> Dict[str, Any]:
    return {"conversationId": cid, "message": {"text": text}}


async def _user_events(rasa_url: str, cid: str) -> List[Dict[str, Any]]:
    tracker = await get_tracker(rasa_url, cid, include_events="ALL")
    return [e for e in tracker["events"] if e["event"] == "user"]


async def _message_keys(rasa_url: str, cid: str) -> List[str]:
    """Idempotency keys of the contact's messages in Rasa's tracker, in order (the
    /restart and /greet of CONVERSATION_STARTED left out)."""
    ids = [e.get("message_id") or "" for e in await _user_events(rasa_url, cid)]
    return [i for i in ids if not i.endswith((":restart", ":start"))]


def _accepted_texts(emu: SparkcentralEmulator, cid: str) -> List[str]:
    """Texts of the conversation calls Sparkcentral accepted (200), in arrival order."""
    return [
        c.json["sendMessage"]["text"]
        for c in emu.calls_to(CONVERSATIONS + cid, "POST")
        if c.status == 200 and isinstance(c.json, dict) and "sendMessage" in c.json
    ]


# ------------------------------------------------------------------ the same event twice


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_repeated_message_is_handled_once(setup: Setup, concurrent: bool) -> None:
    emu = setup.emulator
    cid = await _start(emu)
    result = await emu.deliver(
        INBOUND, _says(cid, "what are your opening hours?"), copies=3, concurrent=concurrent
    )
    assert [(r.status, r.json) for r in result.results] == [(200, {})] * 3
    await emu.wait_for_bot_messages(cid, 2)
    await settle(emu, cid)
    assert emu.bot_texts(cid) == [GREETING, HOURS]
    assert _accepted_texts(emu, cid) == [GREETING, HOURS]
    users = await _user_events(setup.rasa.url, cid)
    assert [e["message_id"] for e in users if e["text"] == "what are your opening hours?"] == [
        result.idempotency_key
    ]


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_repeated_conversation_start_is_handled_once(
    setup: Setup, concurrent: bool
) -> None:
    emu = setup.emulator
    cid = f"rel-{uuid.uuid4().hex[:12]}"
    data = {
        "conversationId": cid,
        "contactProfile": {"id": "0-1", "primaryIdentifier": "Ann", "vip": False},
        "contactAttributes": [],
        "medium": {"id": "smooch-rtm"},
        "channel": {"id": "0-2", "name": "Web"},
    }
    result = await emu.deliver(STARTED, data, copies=2, concurrent=concurrent)
    assert [r.status for r in result.results] == [200, 200]
    await emu.wait_for_bot_messages(cid, 1)
    await settle(emu, cid)
    assert emu.bot_texts(cid) == [GREETING]
    key = result.idempotency_key
    ids = [e["message_id"] for e in await _user_events(setup.rasa.url, cid)]
    # (Rasa keeps no user event for /restart on a new conversation)
    assert [i for i in ids if i != f"{key}:restart"] == [f"{key}:start"]


async def test_a_late_retry_of_an_earlier_message_is_ignored(setup: Setup) -> None:
    emu = setup.emulator
    cid = await _start(emu)
    first = await emu.contact_says(cid, "what are your opening hours?")
    await emu.wait_for_bot_messages(cid, 2)
    await emu.contact_says(cid, "how long does shipping take?")
    await emu.wait_for_bot_messages(cid, 3)
    # Sparkcentral retries the first delivery after the second one was answered
    retry = await emu.deliver(
        INBOUND,
        _says(cid, "what are your opening hours?"),
        idempotency_key=first.idempotency_key,
    )
    assert retry.status == 200 and retry.json == {}
    await settle(emu, cid)
    assert emu.bot_texts(cid) == [GREETING, HOURS, SHIPPING]
    assert len(await _message_keys(setup.rasa.url, cid)) == 2


# ------------------------------------------------------------------ many quick messages


async def test_fifty_quick_messages_are_all_answered_in_order(setup: Setup) -> None:
    emu = setup.emulator
    cid = await _start(emu)
    expected = [GREETING]
    keys = []
    for i in range(50):  # each webhook acknowledged, no reply awaited
        text, reply = QUESTIONS[i % 2]
        result = await emu.contact_says(cid, text)
        assert result.status == 200 and result.json == {}
        keys.append(result.idempotency_key)
        expected.append(reply)
    await emu.wait_for_bot_messages(cid, len(expected), timeout=180)
    await settle(emu, cid)
    assert emu.bot_texts(cid) == expected
    assert _accepted_texts(emu, cid) == expected
    assert await _message_keys(setup.rasa.url, cid) == keys


# ------------------------------------------------------------------ faults


async def test_bursts_of_429_and_5xx_and_an_expired_token_lose_and_repeat_nothing(
    setup: Setup,
) -> None:
    emu = setup.emulator
    faults = emu.faults
    cid = await _start(emu)
    tokens_before = emu.token_requests

    faults.rate_limit_next(3, retry_after=0.05).fail_next(2, status=503).fail_next(1, 500)
    faults.fail_next(1, 502).rate_limit_next(1, retry_after=None)
    expected = [GREETING]
    for i in range(10):
        text, reply = QUESTIONS[i % 2]
        await emu.contact_says(cid, text)
        expected.append(reply)
    await emu.wait_for_bot_messages(cid, 5, timeout=60)

    # mid-run: every token issued so far stops working, and the token endpoint stumbles
    faults.expire_tokens().token_fail_next(2, status=503)
    faults.fail_next(2, status=504).rate_limit_next(2, retry_after=0.05)
    for i in range(10):
        text, reply = QUESTIONS[i % 2]
        await emu.contact_says(cid, text)
        expected.append(reply)

    await emu.wait_for_bot_messages(cid, len(expected), timeout=120)
    await settle(emu, cid)
    assert emu.bot_texts(cid) == expected
    assert _accepted_texts(emu, cid) == expected

    statuses = [c.status for c in emu.calls_to(CONVERSATIONS + cid)]
    assert {429, 500, 502, 503, 504, 401} <= set(statuses)
    assert faults.pending_rest == 0 and faults.pending_token == 0
    # one new token after the expiry (the two failed token requests issued none)
    assert emu.token_requests == tokens_before + 1


async def test_random_failures_in_parallel_conversations(setup: Setup) -> None:
    emu = setup.emulator
    conversations = [await _start(emu) for _ in range(4)]
    emu.faults.seed = 20261125
    emu.faults.fail_rate = 0.25
    injected = emu.faults.injected

    async def talk(cid: str) -> None:
        for i in range(12):
            await emu.contact_says(cid, QUESTIONS[i % 2][0])

    await asyncio.gather(*(talk(cid) for cid in conversations))
    expected = [GREETING] + [QUESTIONS[i % 2][1] for i in range(12)]
    for cid in conversations:
        await emu.wait_for_bot_messages(cid, len(expected), timeout=120)
    for cid in conversations:
        await settle(emu, cid)
        assert emu.bot_texts(cid) == expected
        assert _accepted_texts(emu, cid) == expected
    assert emu.faults.injected > injected


async def test_a_graceful_stop_answers_the_messages_still_queued(setup: Setup) -> None:
    """rasa run stopped (SIGTERM) right after the webhooks were acknowledged: the turns
    still queued are handled and answered before the process exits."""
    emu = setup.emulator
    cid = await _start(emu)
    emu.faults.delay = 0.2  # Sparkcentral is slow: replies are still queued at the stop
    expected = [GREETING]
    for i in range(12):
        text, reply = QUESTIONS[i % 2]
        result = await emu.contact_says(cid, text)
        assert result.status == 200 and result.json == {}
        expected.append(reply)
    answered_before_stop = len(emu.bot_texts(cid))
    await setup.rasa.restart()
    assert answered_before_stop < len(expected)
    await settle(emu, cid)
    assert emu.bot_texts(cid) == expected
    assert _accepted_texts(emu, cid) == expected


# ------------------------------------------------------------------ secrets in logs


async def test_no_secret_in_any_log(setup: Setup) -> None:
    """After a run that fetched, used, lost and refreshed tokens, answered through the
    action server, showed buttons and handed over: no secret in any log."""
    emu = setup.emulator
    logging.getLogger(__name__).debug(MARKER)  # the capture of this process's logs works
    cid = await _start(emu)
    emu.faults.rate_limit_next(1, retry_after=0.05).fail_next(1)
    for text, replies in [
        ("what language am I using?", 1),
        ("show me your plans", 1),
        ("2", 1),
    ]:
        before = len(emu.bot_texts(cid))
        await emu.contact_says(cid, text)
        await emu.wait_for_bot_messages(cid, before + replies)
    emu.faults.expire_tokens()
    await emu.contact_says(cid, "I want to talk to a person")
    await emu.wait_for_queue(cid, "new")
    await settle(emu, cid, quiet=0.5)

    logs = {
        "rasa run": setup.rasa.log_text(),
        "action server": setup.action_server.log_path.read_text(errors="replace"),
        "test process": setup.test_log.getvalue(),
    }
    # the logs are real and detailed
    assert " DEBUG " in logs["rasa run"] and "rasa_sparkcentral" in logs["rasa run"]
    assert "DEBUG" in logs["action server"] and "action_tell_language" in logs["action server"]
    assert MARKER in logs["test process"]

    tokens = set()
    for call in emu.calls:
        if call.path == TOKEN_PATH and isinstance(call.response_json, dict):
            tokens.add(call.response_json.get("access_token"))
        authorization = call.header("Authorization") or ""
        if authorization.startswith("Bearer "):
            tokens.add(authorization[len("Bearer ") :])
    tokens.discard(None)
    assert len(tokens) >= 2, "expected a new token after the expiry"

    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    needles = {
        "client secret": CLIENT_SECRET,
        "client secret (start)": CLIENT_SECRET[:12],
        "basic credentials": basic,
        "shared secret": SHARED_SECRET,
        "shared secret (upper case)": SHARED_SECRET.upper(),
        "shared secret (start)": SHARED_SECRET[:16],
        "shared secret (bytes)": repr(bytes.fromhex(SHARED_SECRET))[2:18],
    }
    for n, token in enumerate(sorted(tokens)):
        needles[f"access token {n}"] = token
        needles[f"access token {n} (start)"] = token[:12]
    leaks = [
        f"{what} in the {where} log"
        for where, text in logs.items()
        for what, needle in needles.items()
        if needle in text
    ]
    assert leaks == []
