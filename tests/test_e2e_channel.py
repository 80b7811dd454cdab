"""Issue 3: the channel end to end on a real ``rasa run`` + action server + emulator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import aiohttp
import pytest

from rasa_sparkcentral.protocol import CREDENTIALS_KEY, HEALTH_PATH, SIGNATURE_HEADER
from rasa_sparkcentral.signature import sign_with_secret
from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import DEFAULT_SHARED_SECRET
from rasa_sparkcentral.testing.emulator.contact import timestamp_now
from tests.helpers import (
    compact,
    get_tracker,
    response_text,
    say_and_wait,
    settle,
    user_texts,
)
from tests.support import Bot

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")
SHIPPING = response_text("utter_shipping")
CONVERSATION_PATH = "/virtual-agent/conversations/"


async def test_health_check(bot: Bot) -> None:
    async with aiohttp.ClientSession() as session, session.get(
        f"{bot.rasa.url}{HEALTH_PATH}"
    ) as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_conversation_replies_arrive_in_order_over_rest(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Johan")
    cid = started.conversation_id
    assert started.status == 200 and started.json == {}
    assert await emu.wait_for_bot_messages(cid, 1) == [GREETING]
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]
    assert await say_and_wait(emu, cid, "how long does shipping take?") == [SHIPPING]
    assert await say_and_wait(emu, cid, "bye") == [response_text("utter_goodbye")]
    assert emu.bot_texts(cid) == [GREETING, HOURS, SHIPPING, response_text("utter_goodbye")]
    # every reply came over REST, with a Bearer token, and the webhook answers were empty
    posts = emu.calls_to(CONVERSATION_PATH + cid, "POST")
    assert posts and all(c.status == 200 for c in posts)
    assert {c.headers["Authorization"].split(" ")[0] for c in posts} == {"Bearer"}
    assert emu.webhook_answers_for(cid) == []
    # Rasa's sender id is the Sparkcentral conversation id
    tracker = await get_tracker(bot.rasa.url, cid)
    assert tracker["sender_id"] == cid
    assert "what are your opening hours?" in user_texts(tracker)
    await settle(emu, cid, quiet=0.3)


async def test_parallel_conversations_keep_their_own_order(bot: Bot) -> None:
    emu = bot.emulator
    ids = []
    for i in range(4):
        started = await emu.start_conversation(name=f"Contact {i}")
        ids.append(started.conversation_id)
    for cid in ids:
        await emu.wait_for_bot_messages(cid, 1)
    questions = ["what are your opening hours?", "how long does shipping take?", "thanks"]
    for question in questions:
        await asyncio.gather(*(emu.contact_says(cid, question) for cid in ids))
    for cid in ids:
        texts = await emu.wait_for_bot_messages(cid, 1 + len(questions))
        assert texts[0] == GREETING
        assert texts[1] == HOURS
        assert texts[2] == SHIPPING


async def test_one_token_for_the_whole_run(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation()
    await emu.wait_for_bot_messages(started.conversation_id, 1)
    assert emu.token_requests == 1
    assert len(emu.calls_to("/virtual-agent/oauth2/token")) == 1
    bearers = {c.headers.get("Authorization") for c in emu.calls_to(CONVERSATION_PATH)}
    assert len(bearers) == 1


# ----------------------------------------------------------------------------- bad input


def _inbound(cid: str, text: str = "hello") -> Dict[str, Any]:
    return {
        "timestamp": timestamp_now(),
        "idempotencyKey": str(uuid.uuid4()),
        "version": 1,
        "type": "INBOUND_MESSAGE_RECEIVED",
        "data": {"conversationId": cid, "message": {"text": text}},
    }


async def _post(url: str, body: bytes, signature: Optional[str]) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers=headers
    ) as response:
        await response.read()
        return response


def _cases(cid: str) -> Dict[str, Any]:
    good = compact(_inbound(cid))
    wrong_secret = "ab" * 32
    return {
        "missing signature": (good, None, 401),
        "wrong signature": (good, sign_with_secret(wrong_secret, good), 401),
        "signature of another body": (
            good,
            sign_with_secret(DEFAULT_SHARED_SECRET, good + b" "),
            401,
        ),
        "ascii-keyed signature": (good, _ascii_keyed(good), 401),
        "not json": (b"{not json", None, 400),
        "json array": (b"[1,2]", None, 400),
        "no conversation id": (
            compact({"type": "INBOUND_MESSAGE_RECEIVED", "idempotencyKey": "x", "data": {}}),
            None,
            400,
        ),
        "conversation id not a string": (
            compact({"type": "CONVERSATION_STARTED", "data": {"conversationId": 42}}),
            None,
            400,
        ),
        "unknown event type": (
            compact({"type": "CONTACT_FELL_ASLEEP", "data": {"conversationId": cid}}),
            None,
            200,
        ),
    }


def _ascii_keyed(body: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(DEFAULT_SHARED_SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "case",
    [
        "missing signature",
        "wrong signature",
        "signature of another body",
        "ascii-keyed signature",
        "not json",
        "json array",
        "no conversation id",
        "conversation id not a string",
        "unknown event type",
    ],
)
async def test_bad_input_is_rejected_and_reaches_nothing(bot: Bot, case: str) -> None:
    emu = bot.emulator
    cid = f"bad-{uuid.uuid4().hex[:12]}"
    body, signature, status = _cases(cid)[case]
    if signature is None and status != 401:
        signature = sign_with_secret(DEFAULT_SHARED_SECRET, body)
    response = await _post(bot.rasa.webhook_url, body, signature)
    assert response.status == status
    if status == 200:
        # unknown event types are acknowledged with an empty JSON object
        result = await emu.deliver("CONTACT_FELL_ASLEEP", {"conversationId": cid})
        assert result.status == 200 and result.json == {}
    await asyncio.sleep(0.5)
    tracker = await get_tracker(bot.rasa.url, cid)
    assert user_texts(tracker) == []
    assert emu.calls_to(CONVERSATION_PATH + cid) == []


async def test_oversized_body_is_refused(bot: Bot) -> None:
    cid = f"big-{uuid.uuid4().hex[:12]}"
    body = compact(_inbound(cid, "x" * 300_000))
    response = await _post(
        bot.rasa.webhook_url, body, sign_with_secret(DEFAULT_SHARED_SECRET, body)
    )
    assert response.status == 413
    assert user_texts(await get_tracker(bot.rasa.url, cid)) == []


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("shared_secret", "not-a-hex-secret", "'shared_secret' is invalid"),
        ("region", "mars", "'region' must be one of us, eu"),
        ("shared_secret", None, "'shared_secret' is missing"),
    ],
)
def test_bad_setting_stops_rasa_run_with_one_clear_line(
    tmp_path: Path, trained_model: Path, setting: str, value: Optional[str], expected: str
) -> None:
    settings: Dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "shared_secret": DEFAULT_SHARED_SECRET,
        "client_id": "id",
        "client_secret": "top-secret-value",
    }
    settings[setting] = value
    if value is None:
        del settings[setting]
    credentials = tmp_path / "credentials.yml"
    credentials.write_text(
        f"{CREDENTIALS_KEY}:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items())
    )
    endpoints = processes.write_endpoints(tmp_path / "endpoints.yml", action_url=None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rasa",
            "run",
            "--model",
            str(trained_model),
            "--credentials",
            str(credentials),
            "--endpoints",
            str(endpoints),
            "--port",
            str(processes.free_port()),
            "-i",
            "127.0.0.1",
        ],
        cwd=tmp_path,
        env=processes.base_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if expected in line]
    assert len(lines) == 1, output[-3000:]
    assert "SparkcentralConfigError" in lines[0]
    assert "Traceback" not in output
    assert "top-secret-value" not in output
