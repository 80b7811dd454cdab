"""Issue 6: the channel's shared state in a real Redis (``RedisState``), as several
``rasa run`` instances use it, and the bounds of the in-memory state."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator, List

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio

from rasa_sparkcentral.state import KEY_PREFIX, MemoryState, RedisState
from rasa_sparkcentral.testing.processes import ManagedProcess

DB = 5  # a database no other test uses


@pytest_asyncio.fixture(loop_scope="session")
async def redis_url(redis_server: ManagedProcess) -> AsyncIterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/{DB}"
    yield url
    client = redis_asyncio.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def instances(redis_url: str) -> AsyncIterator[List[RedisState]]:
    """Two states on one Redis: what two ``rasa run`` instances hold."""
    states = [RedisState(redis_url, dedup_ttl=60), RedisState(redis_url, dedup_ttl=60)]
    yield states
    for state in states:
        await state.close()


async def test_a_delivery_is_claimed_once(instances: List[RedisState]) -> None:
    a, b = instances
    key = str(uuid.uuid4())
    assert await a.claim_delivery(key)
    assert not await a.claim_delivery(key)
    assert not await b.claim_delivery(key)
    assert await b.claim_delivery(str(uuid.uuid4()))


async def test_concurrent_claims_across_instances_win_once(instances: List[RedisState]) -> None:
    keys = [str(uuid.uuid4()) for _ in range(20)]
    claims = [state.claim_delivery(key) for key in keys for state in instances * 5]
    results = await asyncio.gather(*claims)
    per_key = [results[i * 10 : (i + 1) * 10] for i in range(len(keys))]
    assert all(sum(outcomes) == 1 for outcomes in per_key), per_key


async def test_delivery_keys_expire(redis_url: str) -> None:
    state = RedisState(redis_url, dedup_ttl=30)
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        key = str(uuid.uuid4())
        assert await state.claim_delivery(key)
        ttl = await client.ttl(f"{KEY_PREFIX}:delivery:{key}")
        assert 0 < ttl <= 30
    finally:
        await client.close()
        await state.close()


async def test_details_round_trip_between_instances(instances: List[RedisState]) -> None:
    a, b = instances
    cid = f"conv-{uuid.uuid4().hex}"
    details = {
        "conversationId": cid,
        "channelId": "0-01c6421333d-000-4a29abb0",
        "medium": "smooch-rtm",
        "contactProfile": {"primaryIdentifier": "Zoë", "vip": True, "profileUrl": "https://x"},
        "contactAttributes": [{"attribute": "a", "value": "ü", "source": "MEDIUM"}],
    }
    assert await b.load_details(cid) is None
    await a.save_details(cid, details)
    assert await b.load_details(cid) == details
    await b.save_details(cid, dict(details, medium="sms"))
    assert (await a.load_details(cid) or {})["medium"] == "sms"


async def test_buttons_are_taken_once(instances: List[RedisState]) -> None:
    a, b = instances
    cid = f"conv-{uuid.uuid4().hex}"
    buttons = [{"title": "Basic", "payload": "/plan_basic"}, {"title": "Pro", "payload": "/pro"}]
    await a.save_buttons(cid, buttons)
    assert await b.take_buttons(cid) == buttons
    assert await a.take_buttons(cid) is None
    # concurrently, from both instances: exactly one gets them
    await b.save_buttons(cid, buttons)
    taken = await asyncio.gather(*(s.take_buttons(cid) for s in instances * 4))
    assert [t for t in taken if t is not None] == [buttons]


async def test_memory_dedup_is_bounded_in_size_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    state = MemoryState(max_size=100, dedup_ttl=60)
    for i in range(1000):
        assert await state.claim_delivery(f"k{i}")
    assert state.sizes()["deliveries"] == 100
    assert not await state.claim_delivery("k999")  # recent keys are still known
    later = time.monotonic() + 61
    # MemoryState never yields to the event loop, so the clock is shifted for it alone
    with monkeypatch.context() as patched:
        patched.setattr(time, "monotonic", lambda: later)
        assert await state.claim_delivery("k999")  # forgotten after dedup_ttl
