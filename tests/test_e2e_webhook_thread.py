"""webhook_port: the webhook answered on its own thread, off Rasa's event loop."""

from __future__ import annotations

import uuid

import aiohttp

from rasa_sparkcentral.protocol import SIGNATURE_HEADER, WEBHOOK_PATH
from rasa_sparkcentral.signature import sign_with_secret
from rasa_sparkcentral.testing import processes
from tests.helpers import compact, get_tracker, response_text, say_and_wait, user_texts
from tests.support import BotStarter, RasaHandle


async def _webhook_thread_bot(start_bot: BotStarter) -> RasaHandle:
    port = processes.free_port()
    handle = await start_bot(
        name="rasa-webhook-thread", webhook_port=port, webhook_host="127.0.0.1", set_webhook=False
    )
    handle.emulator.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    return handle


async def test_conversation_through_the_webhook_thread(start_bot: BotStarter) -> None:
    handle = await _webhook_thread_bot(start_bot)
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


async def test_webhook_thread_refuses_bad_input_before_rasa(
    start_bot: BotStarter,
) -> None:
    handle = await _webhook_thread_bot(start_bot)
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
