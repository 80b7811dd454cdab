"""Issue 13: the outbox of replies — in order per conversation, queued once per source
event, attempts kept, given up at the deadline, surviving a restart — on SQLite and on a
real redis-server; and the retry delay."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import AsyncIterator, Callable, List

import pytest
import pytest_asyncio

from rasa_sparkcentral.journal import Instance
from rasa_sparkcentral.outbox import Outbox, RedisOutbox, SqliteOutbox, next_retry_delay
from rasa_sparkcentral.testing import processes as servers
from tests.durable_helpers import redis_proc

__all__ = ["redis_proc"]  # a fixture, imported to be used here

MakeOutbox = Callable[..., Outbox]


@pytest_asyncio.fixture(params=["sqlite", "redis"], loop_scope="session")
async def make(
    request: pytest.FixtureRequest, tmp_path: Path, redis_proc: servers.ManagedProcess
) -> AsyncIterator[MakeOutbox]:
    made: List[Outbox] = []
    prefix = f"test-outbox-{uuid.uuid4().hex[:8]}"

    def factory(**kwargs: object) -> Outbox:
        outbox: Outbox
        if request.param == "sqlite":
            outbox = SqliteOutbox(tmp_path / "outbox.sqlite3", **kwargs)  # type: ignore[arg-type]
        else:
            outbox = RedisOutbox(f"{redis_proc.url}/0", prefix=prefix, **kwargs)  # type: ignore[arg-type]
        made.append(outbox)
        return outbox

    yield factory
    for outbox in made:
        await outbox.close()


async def drain(outbox: Outbox, cid: str) -> List[bytes]:
    sent = []
    while (item := await outbox.peek(cid)) is not None:
        sent.append(item.body)
        await outbox.done(item)
    return sent


async def test_replies_come_out_in_order_once(make: MakeOutbox) -> None:
    outbox = make(reply_deadline=300)
    await outbox.start()
    assert await outbox.put("c1", [b"one", b"two"], "k1")
    assert await outbox.put("c2", [b"other"], "k2")
    assert await outbox.put("c1", [b"three"], "k3")
    assert not await outbox.put("c1", [b"one again", b"two again"], "k1")  # a replayed turn
    assert sorted(await outbox.conversations_with_work()) == ["c1", "c2"]
    assert await outbox.pending() == 4

    first = await outbox.peek("c1")
    assert first is not None
    assert (first.body, first.source_key, first.attempts) == (b"one", "k1", 0)
    assert 299 <= first.deadline - first.created_at <= 301
    assert await outbox.peek("c1") == first  # peek does not take

    assert await drain(outbox, "c1") == [b"one", b"two", b"three"]
    await outbox.done(first)  # twice: no effect
    assert await outbox.conversations_with_work() == ["c2"]
    counts = await outbox.counts()
    assert (counts.put, counts.sent, counts.given_up, counts.pending) == (4, 3, 0, 1)


async def test_attempts_are_kept_and_give_up_drops(make: MakeOutbox) -> None:
    outbox = make()
    await outbox.start()
    await outbox.put("c1", [b"a", b"b"], "k1")
    item = await outbox.peek("c1")
    assert item is not None
    item = await outbox.attempted(item)
    item = await outbox.attempted(item)
    assert item.attempts == 2
    again = await outbox.peek("c1")
    assert again is not None and again.attempts == 2
    await outbox.give_up(again)
    rest = await outbox.peek("c1")
    assert rest is not None and (rest.body, rest.attempts) == (b"b", 0)
    counts = await outbox.counts()
    assert (counts.given_up, counts.pending) == (1, 1)


async def test_a_restart_finds_the_queue(make: MakeOutbox) -> None:
    outbox = make(instance=Instance.create("host:1"))
    await outbox.start()
    await outbox.put("c1", [b"x", b"y"], "k1")
    item = await outbox.peek("c1")
    assert item is not None
    await outbox.attempted(item)
    await outbox.close()

    restarted = make(instance=Instance.create("host:1"))
    await restarted.start()
    found = await restarted.peek("c1")
    assert found is not None and (found.body, found.attempts) == (b"x", 1)
    assert not await restarted.put("c1", [b"x"], "k1")
    assert await drain(restarted, "c1") == [b"x", b"y"]


async def test_one_sender_per_conversation(make: MakeOutbox) -> None:
    outbox = make()
    await outbox.start()
    lease = await outbox.acquire("c1")
    assert lease is not None
    assert await outbox.acquire("c1") is None
    await outbox.release(lease)
    assert await outbox.acquire("c1") is not None


# --------------------------------------------------------------------------- retry delay


def test_retry_delay_grows_with_jitter_and_a_cap() -> None:
    low = [
        next_retry_delay(n, now=0, deadline=1e9, base=1, cap=8, rand=lambda: 0.0)
        for n in range(1, 8)
    ]
    high = [
        next_retry_delay(n, now=0, deadline=1e9, base=1, cap=8, rand=lambda: 1.0)
        for n in range(1, 8)
    ]
    assert low == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert high == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    rng = random.Random(7)
    for n in range(1, 30):
        delay = next_retry_delay(n, now=0, deadline=1e9, base=1, cap=8, rand=rng.random)
        assert delay is not None and min(2 ** (n - 1), 8) / 2 <= delay <= min(2 ** (n - 1), 8)


def test_retry_after_is_honoured_within_the_deadline() -> None:
    assert next_retry_delay(1, now=100, deadline=400, retry_after=42) == 42
    assert next_retry_delay(9, now=100, deadline=400, retry_after=0) == 0
    assert next_retry_delay(1, now=100, deadline=400, retry_after=301) is None


def test_retries_stop_at_the_deadline() -> None:
    """Simulated 5-minute outage: attempts continue until the deadline, the last one at
    the deadline, then None."""
    now, deadline, attempts = 0.0, 300.0, 0
    times = []
    while True:
        attempts += 1
        times.append(now)
        delay = next_retry_delay(attempts, now=now, deadline=deadline, rand=lambda: 0.5)
        if delay is None:
            break
        now += delay
    assert times[-1] == deadline
    assert all(b > a for a, b in zip(times, times[1:]))
    assert 12 <= len(times) <= 20  # capped at 30 s, not a tight loop, not one try
    assert next_retry_delay(1, now=300.0, deadline=300.0) is None
