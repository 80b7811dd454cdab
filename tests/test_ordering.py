"""``Ordering`` driven with fake jobs: each conversation's entries one at a time in
acceptance order, different conversations side by side, turn slots bounded (and given
back by a turn waiting on I/O), leases deciding who drains a conversation, and two
instances on one Redis journal keeping one conversation's order (a real ``redis-server``
this module starts on a free port).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Awaitable, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from rasa_sparkcentral import ordering as ordering_module
from rasa_sparkcentral.journal import Entry, Instance, Lease, make_journal
from rasa_sparkcentral.journal.leases import LocalLeases
from rasa_sparkcentral.ordering import Ordering

DB = 6  # a database no other test uses


class Log:
    """What the fake jobs did, in the order they did it."""

    def __init__(self) -> None:
        self.entries: List[Tuple[str, str]] = []

    def of(self, conversation_id: str) -> List[str]:
        return [what for cid, what in self.entries if cid == conversation_id]


class FakeBacklog:
    """The journal's part ``Ordering`` uses, in memory: entries per conversation, leases
    in the process. ``jobs`` maps an entry's key to the fake work its turn does."""

    def __init__(self) -> None:
        self.instance = Instance.create("test")
        self.leases = LocalLeases(self.instance, claim_after=1.0)
        self.entries: Dict[str, List[Entry]] = {}
        self.jobs: Dict[str, Callable[[], Awaitable[None]]] = {}
        self._seq = 0

    def add(self, conversation_id: str, job: Callable[[], Awaitable[None]]) -> str:
        self._seq += 1
        key = f"k{self._seq}"
        entry = Entry(key, conversation_id, b"", str(self._seq), self.instance.token, 0.0)
        self.entries.setdefault(conversation_id, []).append(entry)
        self.jobs[key] = job
        return key

    async def acquire(self, conversation_id: str) -> Optional[Lease]:
        return await self.leases.acquire(conversation_id)

    async def release(self, lease: Lease) -> None:
        await self.leases.release(lease)

    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]:
        return list(self.entries.get(conversation_id, []))[:limit]

    def finish(self, entry: Entry) -> None:
        self.entries[entry.conversation_id].remove(entry)


def ordering_of(backlog: FakeBacklog, **options: float) -> Ordering:
    """An Ordering whose turns run the fake jobs in a slot, then finish the entry."""
    ordering: Ordering

    async def handle(entry: Entry) -> None:
        await ordering.run_in_slot(backlog.jobs[entry.key]())
        backlog.finish(entry)

    ordering = Ordering(backlog, handle, **options)  # type: ignore[arg-type]
    return ordering


def fake_turn(
    log: Log, conversation_id: str, name: str, delay: float
) -> Callable[[], Awaitable[None]]:
    """A turn that takes ``delay`` seconds, logging its start and its end."""

    async def turn() -> None:
        log.entries.append((conversation_id, f"start {name}"))
        await asyncio.sleep(delay)
        log.entries.append((conversation_id, f"end {name}"))

    return turn


async def finished(ordering: Ordering) -> None:
    """Wait until every woken conversation is drained (the ordering stays usable)."""
    while ordering.pending_conversations:
        await asyncio.sleep(0.001)


# ------------------------------------------------------------------------- in one process


async def test_a_conversation_runs_its_entries_one_at_a_time_in_acceptance_order() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog, max_concurrent_turns=8)
    log = Log()
    # the earlier a turn, the slower: run concurrently, they would finish backwards
    for i in range(6):
        backlog.add("c", fake_turn(log, "c", str(i), delay=0.006 - i * 0.001))
        ordering.wake("c")
    await finished(ordering)
    assert log.of("c") == [f"{edge} {i}" for i in range(6) for edge in ("start", "end")]
    assert backlog.entries["c"] == []


async def test_an_entry_recorded_while_the_conversation_drains_is_run_after_the_others() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog)
    log = Log()

    async def first() -> None:
        log.entries.append(("c", "first"))
        # a webhook arrives meanwhile: recorded, then its waker finds the drain running
        backlog.add("c", fake_turn(log, "c", "second", 0))
        ordering.wake("c")

    backlog.add("c", first)
    ordering.wake("c")
    await finished(ordering)
    assert log.of("c") == ["first", "start second", "end second"]


async def test_an_entry_recorded_while_the_lease_is_released_is_not_stranded() -> None:
    """The drain found nothing left and releases; meanwhile a webhook is recorded and
    its waker sees the drain still running. The drain looks again after releasing."""
    backlog = FakeBacklog()
    ordering = ordering_of(backlog)
    log = Log()
    release = backlog.release

    async def release_while_a_webhook_arrives(lease: Lease) -> None:
        if "start late" not in log.of("c") and len(backlog.entries["c"]) == 0:
            backlog.add("c", fake_turn(log, "c", "late", 0))
            ordering._again.discard("c")  # its waker's flag came before the last read
        await release(lease)

    backlog.release = release_while_a_webhook_arrives  # type: ignore[method-assign]
    backlog.add("c", fake_turn(log, "c", "first", 0))
    ordering.wake("c")
    await finished(ordering)
    assert log.of("c") == ["start first", "end first", "start late", "end late"]


async def test_a_failing_turn_stays_in_the_backlog_and_runs_again_before_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ordering_module, "RETRY_READ", 0.005)
    backlog = FakeBacklog()
    ordering = ordering_of(backlog)
    log = Log()
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        log.entries.append(("c", f"try {attempts}"))
        if attempts == 1:
            raise RuntimeError("the bot failed")

    backlog.add("c", flaky)
    backlog.add("c", fake_turn(log, "c", "next", 0))
    ordering.wake("c")
    await finished(ordering)
    assert log.of("c") == ["try 1", "try 2", "start next", "end next"]


async def test_different_conversations_run_side_by_side() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog, max_concurrent_turns=2)
    b_ran = asyncio.Event()
    seen: List[str] = []

    async def a_waits_for_b() -> None:
        await b_ran.wait()
        seen.append("a")

    async def b() -> None:
        seen.append("b")
        b_ran.set()

    backlog.add("a", a_waits_for_b)
    ordering.wake("a")
    backlog.add("b", b)
    ordering.wake("b")
    # were conversations run one after the other, "a" would wait for "b" forever
    await asyncio.wait_for(finished(ordering), timeout=10)
    assert seen == ["b", "a"]


async def test_turn_slots_bound_the_turns_running_at_once() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog, max_concurrent_turns=2, slot_hold=60)
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
        backlog.add(f"conv-{i}", turn)
        ordering.wake(f"conv-{i}")
    while running < 2:
        await asyncio.sleep(0)
    for _ in range(20):  # time for any turn beyond the bound to start
        await asyncio.sleep(0)
    gate.set()
    await finished(ordering)
    assert peak == 2


async def test_turns_waiting_on_io_give_their_slot_back() -> None:
    """Two slow conversations hold both slots; after ``slot_hold`` they give them back
    and a third conversation runs while they still wait."""
    backlog = FakeBacklog()
    ordering = ordering_of(backlog, max_concurrent_turns=2, slot_hold=0.01)
    release = asyncio.Event()
    seen: List[str] = []

    async def slow() -> None:
        await release.wait()
        seen.append("slow")

    async def quick() -> None:
        seen.append("quick")
        release.set()

    for cid in ("slow-1", "slow-2"):
        backlog.add(cid, slow)
        ordering.wake(cid)
    await asyncio.sleep(0)
    backlog.add("quick", quick)
    ordering.wake("quick")
    # holding their slots until the end, the slow turns would wait for "quick" forever
    await asyncio.wait_for(finished(ordering), timeout=10)
    assert seen == ["quick", "slow", "slow"]


async def test_a_conversation_whose_lease_is_held_elsewhere_is_left_to_its_holder() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog)
    log = Log()
    held = await backlog.acquire("c")
    assert held is not None
    backlog.add("c", fake_turn(log, "c", "0", 0))
    ordering.wake("c")
    await finished(ordering)
    assert log.of("c") == []  # the holder runs it
    await backlog.release(held)
    ordering.wake("c")  # the periodic sweep
    await finished(ordering)
    assert log.of("c") == ["start 0", "end 0"]


async def test_a_closing_ordering_starts_nothing_new() -> None:
    backlog = FakeBacklog()
    ordering = ordering_of(backlog)
    log = Log()
    backlog.add("c", fake_turn(log, "c", "0", 0.05))
    backlog.add("c", fake_turn(log, "c", "1", 0))
    ordering.wake("c")
    await asyncio.sleep(0.01)
    await ordering.aclose(grace=5)
    assert log.of("c") == ["start 0", "end 0"]  # the one in flight finished
    assert [e.key for e in backlog.entries["c"]] == ["k2"]  # the rest stays


# ------------------------------------------------------------------------- Redis journal


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


async def test_two_instances_on_one_redis_journal_keep_a_conversations_order(
    local_redis: str,
) -> None:
    """Events of one conversation recorded alternately by two instances; both wake it:
    whoever holds the lease runs them all, in acceptance order, once."""
    journals = [
        make_journal(local_redis, instance=Instance.create(f"i{n}-{uuid.uuid4().hex[:6]}"))
        for n in range(2)
    ]
    log = Log()
    cid = f"conv-{uuid.uuid4().hex}"
    orderings: List[Ordering] = []
    for journal in journals:
        await journal.start()

        def handler(journal: object = journal) -> Callable[[Entry], Awaitable[None]]:
            async def handle(entry: Entry) -> None:
                name = entry.body.decode()
                i = int(name)
                log.entries.append((cid, f"start {name}"))
                await asyncio.sleep(0.03 - i * 0.005)
                log.entries.append((cid, f"end {name}"))
                await journal.finish(entry)  # type: ignore[attr-defined]

            return handle

        orderings.append(Ordering(journal, handler()))
    try:
        for i in range(6):
            await journals[i % 2].record(f"{cid}-{i}", cid, str(i).encode())
            orderings[i % 2].wake(cid)
        while await journals[0].pending() or any(o.pending_conversations for o in orderings):
            for ordering in orderings:
                ordering.wake(cid)  # the sweep
            await asyncio.sleep(0.02)
        assert log.of(cid) == [f"{edge} {i}" for i in range(6) for edge in ("start", "end")]
    finally:
        for ordering, journal in zip(orderings, journals):
            await ordering.aclose(grace=1)
            await journal.close()
