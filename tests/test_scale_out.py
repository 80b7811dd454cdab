"""Issue 6: two ``rasa run`` instances behind a "load balancer", sharing one Redis
(Rasa's tracker and lock stores; the channel's dedup, details, buttons and turn order).

Events go to the instances alternately and every one is also delivered to the other
instance (at once, or later as a retry): every message is answered exactly once, in the
order it was received, and what CONVERSATION_STARTED told instance A is known to B.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest_asyncio

from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import (
    SparkcentralEmulator,
    WebhookResult,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
)
from rasa_sparkcentral.testing.processes import ManagedProcess
from tests.helpers import get_tracker, response_text, settle
from tests.support import BotStarter, RasaHandle

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")
SHIPPING = response_text("utter_shipping")
INBOUND = "INBOUND_MESSAGE_RECEIVED"
STARTED = "CONVERSATION_STARTED"
QUESTIONS = [("what are your opening hours?", HOURS), ("how long does shipping take?", SHIPPING)]


@dataclass
class Pair:
    """Two instances of one bot and the Sparkcentral they both talk to."""

    emulator: SparkcentralEmulator
    a: RasaHandle
    b: RasaHandle

    def urls(self, first: int) -> List[str]:
        """Both webhook URLs, instance ``first % 2`` first."""
        both = [self.a.webhook_url, self.b.webhook_url]
        return both if first % 2 == 0 else both[::-1]

    async def deliver(
        self,
        event_type: str,
        data: Dict[str, Any],
        first: int,
        *,
        concurrent: bool = True,
        idempotency_key: Optional[str] = None,
    ) -> WebhookResult:
        """One event to instance ``first``, and the same delivery again to the other."""
        result = await self.emulator.deliver(
            event_type,
            data,
            urls=self.urls(first),
            copies=2,
            concurrent=concurrent,
            idempotency_key=idempotency_key,
        )
        assert [r.status for r in result.results] == [200, 200]
        assert all(r.json == {} for r in result.results)
        return result


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(start_bot: BotStarter, redis_server: ManagedProcess) -> AsyncIterator[Pair]:
    emulator = await start_bot.new_emulator()
    port = redis_server.port
    common: Dict[str, Any] = {
        "emulator": emulator,
        "tracker_store": processes.redis_tracker_store(port, db=0, key_prefix="scaleout"),
        "lock_store": processes.redis_lock_store(port, db=1, key_prefix="scaleout"),
        "redis_url": f"redis://127.0.0.1:{port}/2",
    }
    a, b = await asyncio.gather(
        start_bot(name="rasa-scale-a", **common),
        start_bot(name="rasa-scale-b", set_webhook=False, **common),
    )
    emulator.webhook_url = a.webhook_url
    yield Pair(emulator, a, b)
    await asyncio.gather(a.stop(), b.stop())


def _started(cid: str, name: str = "Johan", vip: bool = False, language: str = "en-GB") -> Any:
    return {
        "conversationId": cid,
        "contactProfile": default_contact_profile(name, vip=vip),
        "contactAttributes": default_contact_attributes("smooch-rtm", language),
        "medium": {"id": "smooch-rtm"},
        "channel": default_channel(),
    }


def _says(cid: str, text: str) -> Dict[str, Any]:
    return {"conversationId": cid, "message": {"text": text}}


async def _user_keys(rasa_url: str, cid: str) -> List[str]:
    """Message ids (idempotency keys) of the user events in Rasa's tracker, in order."""
    tracker = await get_tracker(rasa_url, cid, include_events="ALL")
    return [e.get("message_id") for e in tracker["events"] if e["event"] == "user"]


def _started_keys(key: str) -> List[str]:
    # a new conversation: Rasa opens the session itself, no /restart (issue 14)
    return [f"{key}:start"]


async def test_a_conversation_served_by_both_instances(pair: Pair) -> None:
    """Started at A, continued at B (and A again): one answer per message, in order, and
    B knows the contact A was told about (VIP, name, browser language, buttons shown)."""
    emu = pair.emulator
    cid = f"scale-{uuid.uuid4().hex[:12]}"
    vip_greeting = response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")
    started = await pair.deliver(STARTED, _started(cid, "Anna", vip=True, language="fr-BE"), 0)
    assert await emu.wait_for_bot_messages(cid, 1) == [vip_greeting]
    keys = _started_keys(started.idempotency_key or "")

    turns = [
        ("what language am I using?", ["Your browser language is fr-BE."]),
        ("hello", [vip_greeting]),
        (
            "show me your plans",
            [response_text("utter_plans") + "\n1. Basic\n2. Pro\n3. Enterprise"],
        ),
        ("2", [response_text("utter_plan_pro")]),  # the buttons A showed, answered at B
        ("what are your opening hours?", [HOURS]),
    ]
    expected = [vip_greeting]
    for i, (text, replies) in enumerate(turns):
        # alternately B and A first, the copy to the other instance as a late retry
        result = await pair.deliver(INBOUND, _says(cid, text), i + 1, concurrent=False)
        keys.append(result.idempotency_key or "")
        expected += replies
        assert await emu.wait_for_bot_messages(cid, len(expected)) == expected

    await settle(emu, cid)
    assert emu.bot_texts(cid) == expected
    for handle in (pair.a, pair.b):
        assert await _user_keys(handle.url, cid) == keys
        slots = (await get_tracker(handle.url, cid))["slots"]
        assert slots["sparkcentral_vip"] is True
        assert slots["sparkcentral_primary_identifier"] == "Anna"
        assert slots["sparkcentral_contact_attributes"] == {"smooch-rtm-browser-language": "fr-BE"}
        assert slots["sparkcentral_channel_details"]["conversationId"] == cid


async def test_quick_alternating_duplicated_messages_are_answered_once_in_order(
    pair: Pair,
) -> None:
    """Messages sent without waiting for replies, alternately to A and B, each one at the
    same time to the other instance too, some repeated again later: the conversation's
    turns run one at a time across both instances, in the order they were received."""
    emu = pair.emulator
    conversations = [f"scale-{uuid.uuid4().hex[:12]}" for _ in range(3)]

    async def conversation(n: int, cid: str) -> List[str]:
        started = await pair.deliver(STARTED, _started(cid), n)
        keys = _started_keys(started.idempotency_key or "")
        sent: List[str] = []
        for i in range(30):
            text, _ = QUESTIONS[i % 2]
            result = await pair.deliver(INBOUND, _says(cid, text), n + i)
            keys.append(result.idempotency_key or "")
            sent.append(result.idempotency_key or "")
            if i % 7 == 6:
                # a retry of an earlier delivery arrives late, at either instance
                old = sent[i - 3]
                await pair.deliver(INBOUND, _says(cid, text), i, idempotency_key=old)
        return keys

    all_keys = await asyncio.gather(*(conversation(n, c) for n, c in enumerate(conversations)))
    expected = [GREETING] + [QUESTIONS[i % 2][1] for i in range(30)]
    for cid in conversations:
        await emu.wait_for_bot_messages(cid, len(expected), timeout=120)
    for cid, keys in zip(conversations, all_keys):
        await settle(emu, cid)
        assert emu.bot_texts(cid) == expected
        assert await _user_keys(pair.b.url, cid) == keys
    # every reply reached Sparkcentral once: one accepted POST per bot message
    for cid in conversations:
        posts = [c for c in emu.calls_to(f"/virtual-agent/conversations/{cid}") if c.status == 200]
        assert len(posts) == len(expected)
