"""Issue 13, acceptance 3, on a real ``rasa run`` (example bot, action server, emulator):
the channel's journal is in Redis (``redis_url``), and that Redis is killed, started
again, then frozen, while contacts keep writing — once with the webhook on Rasa's own
port, once on the channel's ``webhook_port`` thread.

- no 200 without a record: every delivery answered while Redis was down or frozen is a
  503, quickly (no hang, no 500), and every message acknowledged with a 200 is answered;
- 503s during the outage: each outage refused some deliveries (the retries of the
  platform then got their 200s);
- after it, every acknowledged message is answered exactly once, in each conversation's
  order, and a delivery that only ever got a 503 (one the platform gave up on) is never
  answered.

Redis runs with its append-only file synced on every write (``appendfsync always``): a
Redis started again keeps everything it acknowledged, as a production Redis holding a
journal must. Only the channel's journal, outbox and state are in Redis; Rasa's tracker
and lock stores stay in memory (Rasa is not restarted here), so the outage hits the
channel and nothing else.

The contacts send as Sparkcentral does (the emulator's retry rule: 3 retries with the
same idempotencyKey, 0.5, 1 and 2 s apart, then the New queue); the outages are shorter
than that retry span and the freeze begins after the kill's last retry, so every message
finally gets its 200 and no conversation is handed over. One delivery per outage is sent
once and never retried (as if the platform had given up on it). The outage leaves no
traceback in the bot's log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from rasa_sparkcentral.protocol import INBOUND_MESSAGE_RECEIVED, WEBHOOK_PATH
from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from rasa_sparkcentral.testing.emulator.contact import build_envelope, encode_envelope
from rasa_sparkcentral.testing.emulator.models import WebhookResult
from rasa_sparkcentral.testing.processes import ManagedProcess
from tests.helpers import get_tracker, response_text, settle
from tests.support import BotStarter, RasaHandle

GREETING = response_text("utter_greet")
QUESTIONS = [
    ("what are your opening hours?", response_text("utter_opening_hours")),
    ("how long does shipping take?", response_text("utter_shipping")),
]
#: what the deliveries nobody retries say; its answer must never appear
GIVEN_UP = ("thank you", response_text("utter_thanks"))
CONVERSATIONS = 4
#: the contact reads a moment before writing again
PAUSE = 0.25
#: Redis down (killed) and frozen, in seconds: shorter than the platform's retry span
KILLED_FOR = 1.5
FROZEN_FOR = 3.0


@dataclass
class Window:
    """When Redis could not answer (``time.monotonic()``, like ``WebhookResult.at``)."""

    name: str
    began: float = 0.0
    ended: float = 0.0

    def holds(self, delivery: WebhookResult) -> bool:
        """The whole attempt (sent, answered) lies inside the window."""
        return self.began <= delivery.at - delivery.elapsed and delivery.at <= self.ended


@dataclass
class Contact:
    """One conversation and what its contact sent: every delivery, in sending order."""

    cid: str
    sent: List[Tuple[WebhookResult, str]] = field(default_factory=list)

    def expected_replies(self) -> List[str]:
        return [GREETING] + [reply for result, reply in self.sent if result.status == 200]

    async def write(self, emu: SparkcentralEmulator, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            text, reply = QUESTIONS[i % len(QUESTIONS)]
            result = await emu.contact_says(self.cid, text)
            if not result.delivered:  # handed over to a human (every try failed)
                return
            self.sent.append((result, reply))
            i += 1
            await asyncio.sleep(PAUSE)


def persistent_redis(tmp_path: Path) -> ManagedProcess:
    """A Redis whose append-only file is synced before each write is acknowledged."""
    redis = processes.redis_server(
        processes.free_port(), tmp_path / "redis", tmp_path / "redis.log"
    )
    redis.argv[redis.argv.index("--appendonly") + 1] = "yes"
    redis.argv += ["--appendfsync", "always"]
    return redis


async def given_up_delivery(emu: SparkcentralEmulator, cid: str) -> WebhookResult:
    """One delivery sent once and never again (no retry rule: the platform gave up)."""
    key = str(uuid.uuid4())
    data = {"conversationId": cid, "message": {"text": GIVEN_UP[0]}}
    body = encode_envelope(build_envelope(INBOUND_MESSAGE_RECEIVED, data, idempotency_key=key))
    result = await emu.deliver(INBOUND_MESSAGE_RECEIVED, None, raw_body=body, idempotency_key=key)
    result.conversation_id = cid  # a raw body names no conversation to the emulator
    return result


async def start_outage_bot(
    start_bot: BotStarter, redis: ManagedProcess, thread: bool
) -> RasaHandle:
    settings: Dict[str, object] = {"redis_url": f"redis://127.0.0.1:{redis.port}/0"}
    webhook_port: Optional[int] = None
    if thread:
        webhook_port = processes.free_port()
        settings.update(webhook_port=webhook_port, webhook_host="127.0.0.1")
    handle = await start_bot(
        name=f"rasa-redis-outage-{'thread' if thread else 'rasa'}",
        claim_after=3,
        set_webhook=not thread,
        **settings,
    )
    if webhook_port is not None:
        handle.emulator.webhook_url = f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}"
    return handle


@pytest.mark.parametrize("thread", [False, True], ids=["rasa-port", "webhook-port"])
async def test_redis_killed_then_frozen_mid_run(
    start_bot: BotStarter, tmp_path: Path, thread: bool
) -> None:
    redis = persistent_redis(tmp_path)
    redis.start()
    await redis.wait_ready_async()
    try:
        handle = await start_outage_bot(start_bot, redis, thread)
        emu = handle.emulator
        contacts = []
        for _ in range(CONVERSATIONS):
            started = await emu.start_conversation()
            assert started.status == 200
            contacts.append(Contact(started.conversation_id))
        for contact in contacts:
            assert await emu.wait_for_bot_messages(contact.cid, 1) == [GREETING]

        stop = asyncio.Event()
        writing = asyncio.gather(*(c.write(emu, stop) for c in contacts))
        killed, frozen = Window("killed"), Window("frozen")
        given_up: List[WebhookResult] = []
        try:
            await asyncio.sleep(1.0)  # the bot answers as usual

            assert redis.pid is not None
            os.killpg(redis.pid, signal.SIGKILL)
            await redis.stop_async()  # reaped: Redis is gone
            killed.began = time.monotonic()
            given_up.append(await given_up_delivery(emu, contacts[0].cid))
            await asyncio.sleep(KILLED_FOR)
            killed.ended = time.monotonic()
            redis.start()  # the same port, the same append-only file
            await redis.wait_ready_async()
            # every delivery refused meanwhile has its last retry before the next outage
            await asyncio.sleep(sum(emu.sender.retry_delays()) + 0.5)

            assert redis.pid is not None
            os.kill(redis.pid, signal.SIGSTOP)
            frozen.began = time.monotonic()
            given_up.append(await given_up_delivery(emu, contacts[1].cid))
            await asyncio.sleep(max(0.0, FROZEN_FOR - (time.monotonic() - frozen.began)))
            frozen.ended = time.monotonic()
            os.kill(redis.pid, signal.SIGCONT)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await writing

        # answered quickly, 503 or 200: no hang (status 0), no 500
        for contact in contacts:
            for result, _ in contact.sent:
                assert {a["status"] for a in result.attempts} <= {200, 503}, result.attempts
        assert [r.status for r in given_up] == [503, 503]
        # every try that Redis could not have recorded got a 503; each outage had some
        ours = {c.cid for c in contacts}
        probes = {r.idempotency_key for r in given_up}
        deliveries = [d for d in emu.webhook_deliveries if d.conversation_id in ours]
        for window in (killed, frozen):
            inside = [d for d in deliveries if window.holds(d)]
            assert [d.status for d in inside] == [503] * len(inside), window.name
            contact_tries = [d for d in inside if d.idempotency_key not in probes]
            assert contact_tries, f"no contact's delivery met the {window.name} Redis"
        refused = sum(1 for d in deliveries if d.status == 503)
        print(
            f"{'webhook_port' if thread else 'rasa port'}: "
            f"{sum(len(c.sent) for c in contacts)} messages, {refused} tries refused (503); "
            f"the given-up deliveries answered 503 in "
            f"{', '.join(f'{r.elapsed:.2f}' for r in given_up)} s"
        )

        # after the outage: every acknowledged message answered once, in order
        for contact in contacts:
            expected = contact.expected_replies()
            await emu.wait_for_bot_messages(contact.cid, len(expected), timeout=60)
        await asyncio.gather(*(settle(emu, c.cid, quiet=1.0) for c in contacts))
        for n, contact in enumerate(contacts):
            assert emu.bot_texts(contact.cid) == contact.expected_replies(), f"contact {n}"
            assert emu.conversation(contact.cid).queue == "bot", emu.transcript_text(contact.cid)
            tracker = await get_tracker(handle.url, contact.cid, include_events="ALL")
            ids = [e.get("message_id") for e in tracker["events"] if e["event"] == "user"]
            for result, _ in contact.sent:
                assert ids.count(result.idempotency_key) == (1 if result.status == 200 else 0)
        for result in given_up:
            assert result.conversation_id is not None
            tracker = await get_tracker(handle.url, result.conversation_id, include_events="ALL")
            ids = [e.get("message_id") for e in tracker["events"] if e["event"] == "user"]
            assert result.idempotency_key not in ids
        # one line when the store goes down and one when it is back: no traceback
        await handle.stop()
        tracebacks = handle.log_text().count("Traceback")
        assert tracebacks == 0, f"{tracebacks} traceback(s) in {handle.log_path}"
    finally:
        if redis.pid is not None and redis.running:
            os.kill(redis.pid, signal.SIGCONT)
        await redis.stop_async()
