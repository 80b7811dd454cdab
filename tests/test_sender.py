"""The reply sender across an outage of the outbox's Redis: a reply the platform took
while Redis was down is marked sent once Redis is back, never sent again.

A real redis-server (append-only file synced on every write, so a restart keeps the
queued reply), the emulator as Sparkcentral, the real REST client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import AsyncIterator

import pytest

from rasa_sparkcentral.client import SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.outbox import RedisOutbox
from rasa_sparkcentral.sender import ReplySender
from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from rasa_sparkcentral.testing.receiver import emulator_without_bot


@pytest.fixture
async def emulator() -> AsyncIterator[SparkcentralEmulator]:
    async with emulator_without_bot() as emu:
        yield emu


async def test_a_reply_sent_while_redis_is_down_is_not_sent_again(
    emulator: SparkcentralEmulator, tmp_path: Path
) -> None:
    redis = processes.redis_server(processes.free_port(), tmp_path / "redis", tmp_path / "r.log")
    redis.argv[redis.argv.index("--appendonly") + 1] = "yes"
    redis.argv += ["--appendfsync", "always"]
    redis.start()
    await redis.wait_ready_async()
    settings = Settings.from_credentials(
        {
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "shared_secret": emulator.shared_secret,
            "base_url": emulator.base_url,
        }
    )
    client = SparkcentralClient(settings)
    outbox = RedisOutbox(
        f"{redis.url}/0", prefix=f"test-sender-{uuid.uuid4().hex[:8]}", claim_after=1.5
    )
    sender = ReplySender(outbox, client)
    try:
        cid = str((await emulator.start_conversation()).conversation_id)
        await outbox.start()
        assert await outbox.put(cid, [b'{"sendMessage": {"text": "once"}}'], "k1#1")
        emulator.faults.delay = 1.5  # the platform is slow to answer the reply's POST
        sender.wake(cid)
        await emulator.wait_for(lambda: emulator.token_requests > 0, 10)
        await asyncio.sleep(0.3)  # the POST is on the wire: Redis goes away meanwhile
        assert redis.pid is not None
        os.killpg(redis.pid, signal.SIGKILL)
        await redis.stop_async()
        await emulator.wait_for_bot_messages(cid, 1, timeout=10)  # the platform took it
        await asyncio.sleep(0.5)
        redis.start()  # the same port and append-only file: the reply is still queued
        await redis.wait_ready_async()
        emulator.faults.delay = 0.0
        # as the channel's sweep does: wake the conversation until its outbox is empty
        for _ in range(60):
            if sender.active == 0 and await outbox.pending() == 0:
                break
            sender.wake(cid)
            await asyncio.sleep(0.5)
        assert await outbox.pending() == 0
        assert emulator.bot_texts(cid) == ["once"]
    finally:
        await sender.aclose(1.0)
        await outbox.close()
        await client.close()
        await redis.stop_async()
