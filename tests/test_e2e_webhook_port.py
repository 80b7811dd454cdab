"""webhook_port: the webhook answered by a listener process of its own, off Rasa's event
loop and GIL; it ends with ``rasa run``, and what it acknowledged survives that."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from rasa_sparkcentral.protocol import SIGNATURE_HEADER, WEBHOOK_PATH
from rasa_sparkcentral.signature import sign_with_secret
from rasa_sparkcentral.testing import processes
from tests.durable_e2e import all_answered, send_without_waiting, sql_trackers, start_conversations
from tests.helpers import compact, get_tracker, response_text, say_and_wait, user_texts
from tests.support import BotStarter, RasaHandle


async def _webhook_port_bot(start_bot: BotStarter, **settings: Any) -> RasaHandle:
    port = processes.free_port()
    handle = await start_bot(
        name="rasa-webhook-port",
        webhook_port=port,
        webhook_host="127.0.0.1",
        set_webhook=False,
        **settings,
    )
    handle.emulator.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    return handle


async def test_conversation_through_the_webhook_port(start_bot: BotStarter) -> None:
    handle = await _webhook_port_bot(start_bot)
    emu = handle.emulator
    started = await emu.start_conversation(name="Anna", vip=True)
    cid = started.conversation_id
    assert started.status == 200 and started.json == {}
    assert await emu.wait_for_bot_messages(cid, 1) == [
        response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")
    ]
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [
        response_text("utter_opening_hours")
    ]
    # 20 quick messages, sent without waiting: every reply, in order
    before = len(emu.bot_texts(cid))
    questions = ["what are your opening hours?", "how long does shipping take?"] * 10
    for question in questions:
        assert (await emu.contact_says(cid, question)).status == 200
    texts = await emu.wait_for_bot_messages(cid, before + len(questions))
    expected = {
        "what are your opening hours?": response_text("utter_opening_hours"),
        "how long does shipping take?": response_text("utter_shipping"),
    }
    assert texts[before:] == [expected[q] for q in questions]
    # a repeated delivery is still handled once
    result = await emu.deliver(
        "INBOUND_MESSAGE_RECEIVED",
        {"conversationId": cid, "message": {"text": "thanks"}},
        copies=3,
        concurrent=True,
    )
    assert [r.status for r in result.results] == [200, 200, 200]
    await emu.wait_for_bot_messages(cid, before + len(questions) + 1)
    tracker = await get_tracker(handle.url, cid)
    assert user_texts(tracker).count("thanks") == 1


async def test_webhook_port_refuses_bad_input_before_rasa(
    start_bot: BotStarter,
) -> None:
    handle = await _webhook_port_bot(start_bot)
    emu = handle.emulator
    url = emu.webhook_url
    cid = f"bad-{uuid.uuid4().hex[:10]}"
    good = compact(
        {
            "type": "INBOUND_MESSAGE_RECEIVED",
            "idempotencyKey": str(uuid.uuid4()),
            "data": {"conversationId": cid, "message": {"text": "hi"}},
        }
    )
    secret = emu.shared_secret
    cases = [
        (good, None, 401),
        (good, sign_with_secret("ab" * 32, good), 401),
        (b"{oops", sign_with_secret(secret, b"{oops"), 400),
        (
            compact({"type": "NEW_THING"}),
            sign_with_secret(secret, compact({"type": "NEW_THING"})),
            200,
        ),
        (b"x" * 300_000, None, 413),
    ]
    async with aiohttp.ClientSession() as session:
        for body, signature, status in cases:
            headers = {SIGNATURE_HEADER: signature} if signature else {}
            async with session.post(url, data=body, headers=headers) as answer:
                assert answer.status == status
        async with session.get(url[: -len("webhook")]) as health:
            assert health.status == 200
    assert user_texts(await get_tracker(handle.url, cid)) == []
    assert emu.calls_to("/virtual-agent/conversations/" + cid) == []


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode()


async def test_the_listener_ends_with_rasa_and_what_it_acknowledged_is_answered(
    start_bot: BotStarter, tmp_path: Path
) -> None:
    """Only ``rasa run`` is SIGKILLed (not its process group): its listener ends by
    itself (no orphan holding the port), and after the next start every message the
    listener acknowledged is answered."""
    handle = await _webhook_port_bot(
        start_bot, tracker_store=sql_trackers(tmp_path / "trackers.db")
    )
    emu = handle.emulator
    rasa_pid = handle.process.pid
    assert rasa_pid is not None
    [listener] = [p for p in processes.children(rasa_pid) if "webhook_listener" in _cmdline(p)]
    cids = await start_conversations(emu, 4)
    emu.faults.delay = 0.3  # Sparkcentral is slow: replies still waiting at the kill
    expected = await send_without_waiting(emu, cids, 3)
    os.kill(rasa_pid, signal.SIGKILL)
    handle.process.stop()  # reaps it
    for _ in range(200):
        if not os.path.exists(f"/proc/{listener}"):
            break
        await asyncio.sleep(0.025)
    assert not os.path.exists(f"/proc/{listener}"), "the listener outlived rasa run"
    unanswered = sum(len(t) for t in expected.values()) - sum(len(emu.bot_texts(c)) for c in cids)
    assert unanswered > 0  # the kill did hit messages in flight
    emu.faults.delay = 0.0
    handle.process.start()
    await handle.process.wait_ready_async()
    await all_answered(emu, expected, in_flight=len(cids))
