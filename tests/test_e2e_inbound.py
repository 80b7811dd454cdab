"""Issue 12 (inbound half) and issue 14 (sessions) end to end, on a real ``rasa run``:
the published assignment semantics, replay protection, quick-reply payloads and what the
bot learns about each message, and a conversation handed back after its session expired.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List
from urllib.parse import parse_qs

import pytest
import pytest_asyncio

from rasa_sparkcentral.protocol import (
    CONVERSATION_DELEGATED,
    INBOUND_MESSAGE_RECEIVED,
)
from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import get_tracker, response_text, say_and_wait, settle, user_texts
from tests.support import BOT_DIR, BotStarter, RasaHandle

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")
FALLBACK = response_text("utter_default")
#: The variant bot's sessions expire after this many minutes without a user message.
SESSION_MINUTES = 0.1
TRAIN = (sys.executable, "-m", "rasa", "train")


def sql_tracker_store(path: Path) -> Dict[str, Any]:
    """A SQLite tracker store: unlike the in-memory one, it keeps the events of earlier
    sessions, so the tracker API (``include_events=ALL``) shows every message Rasa got."""
    return {"type": "SQL", "dialect": "sqlite", "db": str(path)}


#: What each platform's token request must be (besides HTTP Basic auth).
TOKEN_FORMS = {
    "sparkcentral": {"grant_type": ["client_credentials"], "scope": ["client-read"]},
    "hootsuite": {"grant_type": ["organization_app"], "organization_id": ["org-4711"]},
}


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["sparkcentral", "hootsuite"])
async def published(
    request: pytest.FixtureRequest,
    start_bot: BotStarter,
    tmp_path_factory: pytest.TempPathFactory,
) -> RasaHandle:
    """The example bot with the published defaults (nothing after CONVERSATION_STARTED,
    greet after CONVERSATION_DELEGATED, max_event_age 300 s) on each platform, talking to
    an emulator of that platform."""
    platform = str(request.param)
    emulator = await start_bot.new_emulator(platform=platform, organization_id="org-4711")
    settings: Dict[str, Any] = {"platform": platform, "conversation_started_intent": None}
    if platform == "hootsuite":
        settings["organization_id"] = "org-4711"
    store = sql_tracker_store(tmp_path_factory.mktemp(platform) / "trackers.db")
    return await start_bot(
        emulator=emulator, name=f"rasa-published-{platform}", tracker_store=store, **settings
    )


def _stale_body(cid: str, text: str, minutes: float) -> bytes:
    sent = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    return json.dumps(
        {
            "timestamp": sent.strftime("%Y-%m-%dT%H:%M:%S.%f") + "618Z",
            "idempotencyKey": str(uuid.uuid4()),
            "version": 1,
            "type": INBOUND_MESSAGE_RECEIVED,
            "data": {"conversationId": cid, "message": {"messageId": "m-old", "text": text}},
        }
    ).encode()


# ----------------------------------------------------------------------------- platforms


async def test_a_conversation_on_each_platform(published: RasaHandle) -> None:
    """Webhooks signed with the platform's header, the platform's token request, replies
    on the platform's paths."""
    emu = published.emulator
    platform = emu.platform
    assert (
        emu.signature_header
        == {
            "sparkcentral": "X-Sparkcentral-Signature",
            "hootsuite": "X-Hootsuite-Signature",
        }[platform]
    )
    cid = (await emu.start_conversation(name="Ann")).conversation_id
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]
    assert await say_and_wait(emu, cid, "bye") == [response_text("utter_goodbye")]

    token_calls = emu.calls_to(emu.token_path, "POST")
    assert token_calls and all(c.status == 200 for c in token_calls)
    for call in token_calls:
        assert parse_qs(call.body.decode(), strict_parsing=True) == TOKEN_FORMS[platform]
        basic = base64.b64encode(f"{emu.client_id}:{emu.client_secret}".encode()).decode()
        assert call.header("Authorization") == f"Basic {basic}"
    replies = emu.calls_to(f"{emu.api_prefix}/virtual-agent/conversations/{cid}", "POST")
    assert [c.json for c in replies] == [
        {"sendMessage": {"text": HOURS}},
        {"sendMessage": {"text": response_text("utter_goodbye")}},
    ]
    assert all(c.status == 200 for c in replies)
    if emu.api_prefix:  # nothing went to the classic paths
        assert emu.calls_to("/virtual-agent/") == []


# ----------------------------------------------------------------------------- assignment


async def test_started_the_bot_answers_the_first_message_only(published: RasaHandle) -> None:
    emu = published.emulator
    started = await emu.start_conversation(name="Ann")
    cid = started.conversation_id
    assert (started.status, started.json) == (200, {})
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]
    await settle(emu, cid, quiet=1.0)
    assert emu.bot_texts(cid) == [HOURS]
    # a new conversation needs no /restart: Rasa opened the session itself
    tracker = await get_tracker(published.url, cid, include_events="ALL")
    assert user_texts(tracker) == ["what are your opening hours?"]


async def test_delegated_the_bot_speaks_first(published: RasaHandle) -> None:
    emu = published.emulator
    started = await emu.start_conversation(name="Ben", event_type=CONVERSATION_DELEGATED)
    assert started.status == 200
    cid = started.conversation_id
    assert await emu.wait_for_bot_messages(cid, 1) == [GREETING]
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]


# ----------------------------------------------------------------------------- replay


async def test_an_event_ten_minutes_old_is_refused_and_reaches_nothing(
    published: RasaHandle,
) -> None:
    emu = published.emulator
    cid = (await emu.start_conversation()).conversation_id
    body = _stale_body(cid, "what are your opening hours?", minutes=10)
    result = await emu.deliver(INBOUND_MESSAGE_RECEIVED, None, raw_body=body)
    assert (result.status, result.json) == (401, {"error": "stale event"})
    await settle(emu, cid, quiet=1.0)
    assert emu.bot_texts(cid) == []
    assert user_texts(await get_tracker(published.url, cid)) == []
    refused = [line for line in published.log_text().splitlines() if "Rejected a webhook" in line]
    assert any(re.search(r"\b6\d\d s old", line) for line in refused)


async def test_max_event_age_zero_accepts_an_event_ten_minutes_old(
    start_bot: BotStarter,
) -> None:
    handle = await start_bot(
        name="rasa-no-replay-check", conversation_started_intent=None, max_event_age=0
    )
    emu = handle.emulator
    cid = (await emu.start_conversation()).conversation_id
    body = _stale_body(cid, "what are your opening hours?", minutes=10)
    result = await emu.deliver(INBOUND_MESSAGE_RECEIVED, None, raw_body=body)
    assert (result.status, result.json) == (200, {})
    assert await emu.wait_for_bot_messages(cid, 1) == [HOURS]
    assert user_texts(await get_tracker(handle.url, cid)) == ["what are your opening hours?"]


# ----------------------------------------------------------------------------- inbound fields


async def test_a_quick_reply_payload_reaches_rasa_as_that_intent(published: RasaHandle) -> None:
    emu = published.emulator
    cid = (await emu.start_conversation(language="nl-BE")).conversation_id
    result = await emu.contact_says(
        cid,
        "Pro",
        payload="/plan_pro",
        topics=["sales", "vip"],
        trigger={"type": "STORY", "action": "REPLY"},
    )
    assert result.status == 200 and result.message_id
    assert await emu.wait_for_bot_messages(cid, 1) == [response_text("utter_plan_pro")]
    # the turn goes on after the reply (the plan rule's attribute action): let it end
    await settle(emu, cid, quiet=1.0)

    tracker = await get_tracker(published.url, cid)
    latest = tracker["latest_message"]
    assert latest["text"] == "/plan_pro"
    assert latest["intent"]["name"] == "plan_pro"
    assert latest["message_id"] == result.idempotency_key
    block = latest["metadata"]["sparkcentral"]
    assert block["messageId"] == result.message_id
    assert block["payload"] == "/plan_pro"
    assert block["topics"] == ["sales", "vip"]
    assert block["trigger"] == {"type": "STORY", "action": "REPLY"}
    # Inbox 2.0 repeats the language with the message; classic sent it on assignment
    assert block["language"] == "nl-BE"
    # no turn after the assignment: the first message Rasa gets carries the details
    assert block["conversationId"] == cid and block["channelId"]


async def test_an_inbound_event_that_repeats_the_details_refreshes_them(
    published: RasaHandle,
) -> None:
    emu = published.emulator
    cid = (await emu.start_conversation(medium="smooch-rtm")).conversation_id
    data = {
        "conversationId": cid,
        "message": {"messageId": "msg-1", "text": "what are your opening hours?"},
        "channel": {"id": "0-ig", "name": "Instagram DMs"},
        "medium": {"id": "instagram"},
        "contactProfile": {"id": "0-p", "primaryIdentifier": "ann.b"},
    }
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, data)).status == 200
    assert await emu.wait_for_bot_messages(cid, 1) == [HOURS]
    # the next message repeats nothing (as on classic Sparkcentral): the refreshed
    # details are the ones kept
    plain = {"conversationId": cid, "message": {"messageId": "msg-2", "text": "thanks"}}
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, plain)).status == 200
    assert await emu.wait_for_bot_messages(cid, 2) == [HOURS, response_text("utter_thanks")]
    tracker = await get_tracker(published.url, cid)
    slots = tracker["slots"]
    whole = slots["sparkcentral_channel_details"]
    assert (
        whole["channelId"],
        whole["channelName"],
        whole["medium"],
        slots["sparkcentral_primary_identifier"],
    ) == ("0-ig", "Instagram DMs", "instagram", "ann.b")
    # the refreshed details were new to Rasa on msg-1 only
    users = [e for e in tracker["events"] if e["event"] == "user"]
    blocks = [e["metadata"]["sparkcentral"] for e in users]
    blocks = [b for b in blocks if b.get("messageId")]  # not the assignment's
    assert [(b["messageId"], "contactProfile" in b) for b in blocks] == [
        ("msg-1", True),
        ("msg-2", False),
    ]
    assert blocks[0]["contactProfile"]["primaryIdentifier"] == "ann.b"


# ----------------------------------------------------------------------------- sessions


@pytest.fixture(scope="module")
def expiring_model(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Path:
    """The example bot trained with ``session_expiration_time: 0.1`` (6 seconds)."""
    work = tmp_path_factory.mktemp("expiring-bot")
    shutil.copy(BOT_DIR / "config.yml", work / "config.yml")
    shutil.copytree(BOT_DIR / "data", work / "data")
    domain = (BOT_DIR / "domain.yml").read_text(encoding="utf-8")
    assert "session_expiration_time: 60\n" in domain
    domain = domain.replace(
        "session_expiration_time: 60\n", f"session_expiration_time: {SESSION_MINUTES}\n"
    )
    (work / "domain.yml").write_text(domain, encoding="utf-8")
    log = work / "train.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            [*TRAIN, "--fixed-model-name", "expiring", "--out", str(work / "models")],
            cwd=work,
            env=processes.base_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    model = work / "models" / "expiring.tar.gz"
    if done.returncode != 0 or not model.exists():
        pytest.fail(f"rasa train failed:\n{log.read_text(errors='replace')[-3000:]}")
    return model


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def expiring(start_bot: BotStarter, expiring_model: Path) -> AsyncIterator[RasaHandle]:
    starter = dataclasses.replace(
        start_bot, model_path=expiring_model, handles=[], own_emulators=[]
    )
    store = sql_tracker_store(expiring_model.parent / "trackers.db")
    try:
        yield await starter(name="rasa-expiring-sessions", tracker_store=store)
    finally:
        await starter.close()


def _events_of_last_session(tracker: Dict[str, Any]) -> List[Any]:
    """Actions, session starts and user messages from the last session start on."""
    events = tracker["events"]
    last = max(i for i, e in enumerate(events) if e["event"] == "session_started")
    kinds = ("action", "session_started", "user")
    return [
        (e["event"], e.get("name") or e.get("text"))
        for e in events[last - 1 :]
        if e["event"] in kinds
    ]


@pytest.mark.parametrize("event_type", ["CONVERSATION_STARTED", "CONVERSATION_DELEGATED"])
async def test_handed_back_after_the_session_expired_greets_never_the_fallback(
    expiring: RasaHandle, event_type: str
) -> None:
    emu: SparkcentralEmulator = expiring.emulator
    started = await emu.start_conversation(name="Marie")
    cid = started.conversation_id
    assert await emu.wait_for_bot_messages(cid, 1) == [GREETING]
    assert await say_and_wait(emu, cid, "I want to talk to a person") == [
        response_text("utter_handoff")
    ]
    await emu.wait_for_queue(cid, "new")
    assert (await get_tracker(expiring.url, cid))["paused"] is True

    # the agent helps; the session expires meanwhile (no user message for 6 s)
    emu.agent_says(cid, "Hi Marie, this is Tom. All sorted, back to the bot!")
    await asyncio.sleep(SESSION_MINUTES * 60 + 1.0)

    before = len(emu.bot_texts(cid))
    assert (await emu.hand_back(cid, event_type=event_type)).status == 200
    texts = await emu.wait_for_bot_messages(cid, before + 1)
    assert texts[before:] == [GREETING]
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]
    assert FALLBACK not in emu.bot_texts(cid)

    tracker = await get_tracker(expiring.url, cid, include_events="ALL")
    assert tracker["paused"] is False
    # Rasa opened the new session itself (lifting the pause): no /restart was needed,
    # and none was sent (on Rasa Pro it would leave the greeting to the fallback)
    assert "/restart" not in user_texts(tracker)
    assert "I want to talk to a person" in user_texts(tracker)  # the earlier session
    assert _events_of_last_session(tracker)[:4] == [
        ("action", "action_session_start"),
        ("session_started", None),
        ("action", "action_listen"),
        ("user", "/greet"),
    ]
