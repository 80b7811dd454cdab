"""The embedded store's SQLite worker process: calls that reach it together share one
transaction (group commit), each call still fails alone, results and ``after`` hooks come
only after the commit, a worker that dies fails its calls and is started again; and the
outbox kept in the journal's file.

The calls are module-level functions of this module: the worker imports it by name."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import List, Set

import pytest

from rasa_sparkcentral import outbox as outbox_module
from rasa_sparkcentral.journal import Accepted, JournalUnavailable, SqliteJournal
from rasa_sparkcentral.journal.sqlite_process import SqliteProcess
from rasa_sparkcentral.outbox import SqliteOutbox

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY);"


def insert(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
    return n


def stored(conn: sqlite3.Connection) -> List[int]:
    return [row[0] for row in conn.execute("SELECT n FROM t ORDER BY n")]


def duplicate(conn: sqlite3.Connection) -> int:
    conn.execute("INSERT INTO t (n) VALUES (1000)")
    conn.execute("INSERT INTO t (n) VALUES (1)")  # 1 is taken: IntegrityError
    return -1


def checkpoint(conn: sqlite3.Connection) -> bool:
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return bool(conn.in_transaction) or bool(busy)


def tables(conn: sqlite3.Connection) -> Set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def sources(conn: sqlite3.Connection) -> List[str]:
    return [row[0] for row in conn.execute("SELECT source_key FROM outbox_sources")]


def pid(conn: sqlite3.Connection) -> int:
    return os.getpid()


async def test_calls_queued_together_share_a_transaction(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()
    try:
        results = await asyncio.gather(*(db.call(insert, n) for n in range(200)))
        assert results == list(range(200))
        assert await db.call(stored) == list(range(200))
        assert db.calls == 202  # open, 200 inserts, the read
        assert db.batches < 100  # grouped: far fewer commits than calls
    finally:
        await db.close()


async def test_a_failing_call_fails_alone_and_leaves_nothing(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()
    seen: List[int] = []

    try:
        calls = [db.call(insert, n, after=seen.append) for n in range(1, 10)]
        calls.insert(5, db.call(duplicate, after=seen.append))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failed = outcomes.pop(5)
        assert isinstance(failed, JournalUnavailable)  # an sqlite3.Error, as the channel sees it
        assert outcomes == list(range(1, 10))
        assert sorted(seen) == list(range(1, 10))  # no after-hook for the failed call
        assert await db.call(stored) == list(range(1, 10))  # its first insert rolled back
    finally:
        await db.close()


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.call(insert, 1)
    await db.close()
    with pytest.raises(JournalUnavailable):
        await db.call(insert, 2)


async def test_the_outbox_lives_in_the_journals_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    outbox = SqliteOutbox(tmp_path / "unused.sqlite3", db=journal.db, dedup_ttl=0.2)
    await journal.start()
    await outbox.start()
    assert await journal.record("k1", "c1", b"{}") is Accepted.NEW
    assert await outbox.put("c1", [b"reply"], "k1#1")
    assert {"journal", "journal_bodies", "outbox", "outbox_sources"} <= await journal.db.call(
        tables
    )
    assert not (tmp_path / "unused.sqlite3").exists()
    item = await outbox.peek("c1")
    assert item is not None and item.body == b"reply"
    await outbox.done(item)
    assert not await outbox.put("c1", [b"reply"], "k1#1")  # a repeat within dedup_ttl
    await asyncio.sleep(0.3)
    assert await outbox.compact() == 1
    assert await outbox.put("c1", [b"reply"], "k1#1")  # forgotten after dedup_ttl
    await outbox.close()
    await journal.close()

    reopened = SqliteJournal(path)
    again = SqliteOutbox(db=reopened.db)
    await reopened.start()
    await again.start()
    try:
        assert [e.key for e in await reopened.unfinished("c1")] == ["k1"]
        found = await again.peek("c1")
        assert found is not None and found.body == b"reply"
    finally:
        await again.close()
        await reopened.close()


async def test_a_call_alone_runs_outside_the_transaction(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()

    try:
        calls = [db.call(insert, n) for n in range(20)]
        calls.insert(10, db.call(checkpoint, alone=True))
        outcomes = await asyncio.gather(*calls)
        assert outcomes.pop(10) is False  # ran, outside any transaction
        assert outcomes == list(range(20))
        with pytest.raises(JournalUnavailable):  # in a transaction a checkpoint fails
            await db.call(checkpoint)
    finally:
        await db.close()


async def test_the_outbox_compacts_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "COMPACT_EVERY", 3)
    outbox = SqliteOutbox(tmp_path / "outbox.sqlite3", dedup_ttl=0.2)
    await outbox.start()

    try:
        await outbox.put("c1", [b"a"], "k1")
        await outbox.put("c1", [b"b"], "k2")
        await asyncio.sleep(0.3)  # k1, k2 are older than dedup_ttl now
        assert sorted(await outbox.db.call(sources)) == ["k1", "k2"]
        await outbox.put("c1", [b"c"], "k3")  # the third put compacts
        assert await outbox.db.call(sources) == ["k3"]
        assert await outbox.pending() == 3  # unsent replies are never compacted
    finally:
        await outbox.close()


async def test_a_dead_worker_fails_its_calls_and_a_new_one_takes_over(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    try:
        await db.call(insert, 1)
        first = await db.call(pid)
        assert first == db.worker_pid and first != os.getpid()  # a process of its own
        os.kill(first, signal.SIGKILL)
        with pytest.raises(JournalUnavailable):  # no answer: the caller answers 503
            for n in range(2, 100):  # until the loop has seen the socket close
                await db.call(insert, n)
                await asyncio.sleep(0.01)
        assert await db.call(pid) not in (first, None)  # started again on the next call
        kept = await db.call(stored)
        assert kept[0] == 1 and kept == sorted(kept)  # committed calls are kept
    finally:
        await db.close()
    assert db.worker_pid is None  # closing the store ends its worker


async def test_starting_a_worker_happens_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a worker (Popen, and waiting for a dead one) blocks for milliseconds: it
    runs on an executor thread, never on the calling loop's."""
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    starts: List[int] = []
    spawn = db._spawn

    def spawn_and_note() -> None:
        starts.append(threading.get_ident())
        spawn()

    monkeypatch.setattr(db, "_spawn", spawn_and_note)
    try:
        first = await db.call(pid)
        os.kill(first, signal.SIGKILL)
        while db.worker_pid == first:  # until it is gone
            await asyncio.sleep(0.01)
        again = None
        for _ in range(100):  # a call the dead worker had may fail (503): the next starts one
            try:
                again = await db.call(pid)
                break
            except JournalUnavailable:
                await asyncio.sleep(0.01)
        assert again not in (first, None)
    finally:
        await db.close()
    assert len(starts) == 2 and threading.get_ident() not in starts


async def test_the_worker_ends_with_the_store(tmp_path: Path) -> None:
    db = SqliteProcess(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()
    worker = db._process
    assert worker is not None and worker.poll() is None
    await db.close()
    assert worker.returncode == 0  # it ended on its own (close kills it only after a wait)


async def test_a_new_worker_brings_back_what_the_dead_one_committed_unanswered(
    tmp_path: Path,
) -> None:
    """The worker commits, then dies before its answer: the journal's and the outbox's
    in-memory copies never heard of that event or reply. The worker that replaces it
    reloads them before anything else, so that they are run and sent without a restart."""
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    outbox = SqliteOutbox(db=journal.db)
    await journal.start()
    await outbox.start()
    try:
        assert await journal.record("k1", "c1", b"{}") is Accepted.NEW
        worker = journal.db.worker_pid
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        # what the dead worker committed without answering (written beside it, as it would)
        with sqlite3.connect(path) as conn:
            seq = conn.execute(
                "INSERT INTO journal (key, conversation_id, accepted_by, accepted_at)"
                " VALUES ('k2', 'c2', 'gone', 0)"
            ).lastrowid
            conn.execute("INSERT INTO journal_bodies VALUES (?, x'7b7d')", (seq,))
            conn.execute(
                "INSERT INTO outbox (conversation_id, body, source_key, created_at, deadline)"
                " VALUES ('c2', x'7b7d', 'k2', 0, 1e12)"
            )
        for _ in range(100):  # until the loop has seen the worker's socket close
            try:
                await journal.record("k3", "c3", b"{}")
                break
            except JournalUnavailable:
                await asyncio.sleep(0.01)
        assert journal.db.worker_pid not in (worker, None)
        assert [e.key for e in await journal.unfinished("c2")] == ["k2"]
        assert await journal.record("k2", "c2", b"{}") is Accepted.PENDING
        reply = await outbox.peek("c2")
        assert reply is not None and reply.source_key == "k2"
        assert sorted(await journal.conversations_with_work()) == ["c1", "c2", "c3"]
    finally:
        await outbox.close()
        await journal.close()
