"""The platform's retry rule against a real ``rasa run``: a webhook the bot cannot record is
answered 503, the platform sends the same delivery again (same idempotencyKey), and the
contact's message is then answered once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from rasa_sparkcentral.testing import processes
from tests.helpers import get_tracker, response_text, settle
from tests.support import BotStarter

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")


async def test_a_503_is_retried_with_the_same_key_and_answered_once(
    start_bot: BotStarter, tmp_path: Path
) -> None:
    redis_port = processes.free_port()
    redis = processes.redis_server(redis_port, tmp_path / "redis", tmp_path / "redis.log")
    redis.start()
    await redis.wait_ready_async()
    try:
        handle = await start_bot(redis_url=f"redis://127.0.0.1:{redis_port}/0", claim_after=3)
        emu = handle.emulator
        cid = (await emu.start_conversation()).conversation_id
        assert cid is not None
        assert await emu.wait_for_bot_messages(cid, 1) == [GREETING]
        await settle(emu, cid)

        # the bot's journal (Redis) is frozen for 2.5 s: the first delivery cannot be
        # recorded within its 1.5 s timeout (503); a retry of the platform can
        assert redis.pid is not None
        os.kill(redis.pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(2.5, os.kill, redis.pid, signal.SIGCONT)
        result = await emu.contact_says(cid, "what are your opening hours?")

        statuses = [attempt["status"] for attempt in result.attempts]
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
        assert result.status == 200
        assert await emu.wait_for_bot_messages(cid, 2) == [GREETING, HOURS]
        await settle(emu, cid)
        assert emu.bot_texts(cid) == [GREETING, HOURS]  # answered once
        assert emu.conversation(cid).queue == "bot"  # no handover: a retry succeeded
        tracker = await get_tracker(handle.url, cid, include_events="ALL")
        keys = [e.get("message_id") for e in tracker["events"] if e["event"] == "user"]
        assert keys.count(result.idempotency_key) == 1  # every try carried the same key
    finally:
        if redis.pid is not None and redis.running:
            os.kill(redis.pid, signal.SIGCONT)
        redis.stop()
