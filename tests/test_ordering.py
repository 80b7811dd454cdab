"""``Ordering`` driven with fake jobs: each conversation's turns in arrival order, different
conversations side by side, turn slots bounded, and the Redis turn tickets that order one
conversation across instances (a real ``redis-server`` this module starts on a free port).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import AsyncIterator, Iterator, List, Tuple

import pytest
import pytest_asyncio
import redis.asyncio as redis_asyncio

from rasa_sparkcentral.ordering import Job, Ordering, RedisTickets, TurnTickets
from rasa_sparkcentral.state import KEY_PREFIX

DB = 6  # a database no other test uses


class Log:
    """What the fake jobs did, in the order they did it."""

    def __init__(self) -> None:
        self.entries: List[Tuple[str, str]] = []

    def of(self, conversation_id: str) -> List[str]:
        return [what for cid, what in self.entries if cid == conversation_id]


def fake_turn(log: Log, conversation_id: str, name: str, delay: float) -> Job:
    """A turn that takes ``delay`` seconds, logging its start and its end."""

    async def turn() -> None:
        log.entries.append((conversation_id, f"start {name}"))
        await asyncio.sleep(delay)
        log.entries.append((conversation_id, f"end {name}"))

    return turn


async def finished(ordering: Ordering) -> None:
    """Wait until every queued turn has run (the ordering stays usable)."""
    while ordering.pending_conversations:
        await asyncio.sleep(0.001)


# ------------------------------------------------------------------------- in one process


async def test_a_conversation_runs_its_turns_one_at_a_time_in_arrival_order() -> None:
    ordering = Ordering(max_concurrent_turns=8)
    log = Log()
    # the earlier a turn, the slower: run concurrently, they would finish backwards
    for i in range(6):
        await ordering.submit("c", fake_turn(log, "c", str(i), delay=0.006 - i * 0.001))
    await finished(ordering)
    assert log.of("c") == [f"{edge} {i}" for i in range(6) for edge in ("start", "end")]


async def test_then_runs_after_the_turn_and_before_the_next_one_even_after_a_failure() -> None:
    ordering = Ordering()
    log = Log()

    async def failing() -> None:
        log.entries.append(("c", "start 0"))
        raise RuntimeError("the bot failed")

    async def then(name: str) -> None:
        await asyncio.sleep(0.002)
        log.entries.append(("c", f"then {name}"))

    await ordering.submit("c", failing, lambda: then("0"))
    await ordering.submit("c", fake_turn(log, "c", "1", 0), lambda: then("1"))
    await finished(ordering)
    assert log.of("c") == ["start 0", "then 0", "start 1", "end 1", "then 1"]


async def test_different_conversations_run_side_by_side() -> None:
    ordering = Ordering(max_concurrent_turns=2)
    b_ran = asyncio.Event()
    seen: List[str] = []

    async def a_waits_for_b() -> None:
        await b_ran.wait()
        seen.append("a")

    async def b() -> None:
        seen.append("b")
        b_ran.set()

    await ordering.submit("a", a_waits_for_b)
    await ordering.submit("b", b)
    # were conversations run one after the other, "a" would wait for "b" forever
    await asyncio.wait_for(finished(ordering), timeout=10)
    assert seen == ["b", "a"]


async def test_turn_slots_bound_the_turns_running_at_once() -> None:
    ordering = Ordering(max_concurrent_turns=2)
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def turn() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    for i in range(5):
        await ordering.submit(f"conv-{i}", turn)
    while running < 2:
        await asyncio.sleep(0)
    for _ in range(20):  # time for any turn beyond the bound to start
        await asyncio.sleep(0)
    gate.set()
    await finished(ordering)
    assert peak == 2


async def test_in_memory_tickets_order_nothing_and_never_wait() -> None:
    tickets = TurnTickets()
    assert await tickets.take("c") is None
    assert await tickets.wait("c", 5, timeout=0)
    await tickets.finish("c", 5)


# ------------------------------------------------------------------------- Redis tickets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def local_redis() -> Iterator[str]:
    """``redis://`` URL of a throw-away redis-server (no persistence) on a free port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make redis)"
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir]
        argv.extend(["--save", "", "--appendonly", "no"])  # no persistence
        process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(500):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                        conn.sendall(b"PING\r\n")
                        if conn.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                assert process.poll() is None, "redis-server exited"
                time.sleep(0.01)
            else:
                raise AssertionError(f"redis-server did not answer on port {port}")
            yield f"redis://127.0.0.1:{port}/{DB}"
        finally:
            process.terminate()
            process.wait(10)


@pytest_asyncio.fixture(loop_scope="session")
async def tickets(local_redis: str) -> AsyncIterator[List[RedisTickets]]:
    """Two ticket backends on one Redis: what two ``rasa run`` instances hold."""
    pair = [RedisTickets(local_redis), RedisTickets(local_redis)]
    yield pair
    for backend in pair:
        await backend.close()


async def test_turn_tickets_follow_arrival_across_instances(tickets: List[RedisTickets]) -> None:
    a, b = tickets
    cid = f"conv-{uuid.uuid4().hex}"
    issued = [await a.take(cid), await b.take(cid), await a.take(cid)]
    assert issued == [1, 2, 3]
    # concurrent takers all get distinct, consecutive tickets
    more = await asyncio.gather(*(s.take(cid) for s in tickets * 10))
    assert sorted(t for t in more if t is not None) == list(range(4, 24))


async def test_a_turn_waits_for_the_earlier_ones(tickets: List[RedisTickets]) -> None:
    a, b = tickets
    cid = f"conv-{uuid.uuid4().hex}"
    first, second, third = [await s.take(cid) for s in (a, b, a)]
    assert (first, second, third) == (1, 2, 3)
    assert await a.wait(cid, 1, timeout=1)  # nothing before the first
    assert not await b.wait(cid, 2, timeout=0.05)  # the first is not done
    waiting = asyncio.ensure_future(a.wait(cid, 3, timeout=5))
    await a.finish(cid, 1)
    assert await b.wait(cid, 2, timeout=1)
    assert not waiting.done()
    await b.finish(cid, 2)
    assert await waiting
    # finishing an older turn late (after a timeout) does not move the mark back
    await a.finish(cid, 3)
    await b.finish(cid, 2)
    assert await a.wait(cid, 4, timeout=0.05)


async def test_a_fresh_counter_forgets_a_stale_mark(local_redis: str) -> None:
    backend = RedisTickets(local_redis)
    client = redis_asyncio.Redis.from_url(local_redis)
    try:
        cid = f"conv-{uuid.uuid4().hex}"
        for ticket in range(1, 6):
            assert await backend.take(cid) == ticket
            await backend.finish(cid, ticket)
        # the counter expired (or was lost) while the mark survived
        await client.delete(f"{KEY_PREFIX}:turn:{{{cid}}}:issued")
        assert await backend.take(cid) == 1
        assert await backend.take(cid) == 2
        assert not await backend.wait(cid, 2, timeout=0.05)  # waits for the new 1
        assert await client.ttl(f"{KEY_PREFIX}:turn:{{{cid}}}:issued") > 0
    finally:
        await client.close()
        await backend.close()


async def test_two_instances_run_one_conversation_in_arrival_order(local_redis: str) -> None:
    instances = [Ordering(RedisTickets(local_redis)), Ordering(RedisTickets(local_redis))]
    log = Log()
    cid = f"conv-{uuid.uuid4().hex}"
    # events alternate between the instances; the earlier, the slower
    for i in range(6):
        await instances[i % 2].submit(cid, fake_turn(log, cid, str(i), delay=0.03 - i * 0.005))
    for instance in instances:
        await finished(instance)
        await instance.aclose(grace=1)
    assert log.of(cid) == [f"{edge} {i}" for i in range(6) for edge in ("start", "end")]
