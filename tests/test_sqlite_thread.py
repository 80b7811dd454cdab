"""The embedded store's SQLite thread: calls queued together share one transaction (group
commit), each call still fails alone, results and ``after`` hooks come only after the
commit; and the outbox kept in the journal's file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import List

import pytest

from rasa_sparkcentral import outbox as outbox_module
from rasa_sparkcentral.journal import Accepted, JournalUnavailable, SqliteJournal
from rasa_sparkcentral.journal.sqlite_thread import SqliteThread
from rasa_sparkcentral.outbox import SqliteOutbox

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY);"


def insert(n: int):  # type: ignore[no-untyped-def]
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
        return n

    return run


def stored(conn: sqlite3.Connection) -> List[int]:
    return [row[0] for row in conn.execute("SELECT n FROM t ORDER BY n")]


async def test_calls_queued_together_share_a_transaction(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()
    try:
        results = await asyncio.gather(*(db.call(insert(n)) for n in range(200)))
        assert results == list(range(200))
        assert await db.call(stored) == list(range(200))
        assert db.calls == 202  # open, 200 inserts, the read
        assert db.batches < 100  # grouped: far fewer commits than calls
    finally:
        await db.close()


async def test_a_failing_call_fails_alone_and_leaves_nothing(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()
    seen: List[int] = []

    def duplicate(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (n) VALUES (1000)")
        conn.execute("INSERT INTO t (n) VALUES (1)")  # 1 is taken: IntegrityError
        return -1

    try:
        calls = [db.call(insert(n), after=seen.append) for n in range(1, 10)]
        calls.insert(5, db.call(duplicate, after=seen.append))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failed = outcomes.pop(5)
        assert isinstance(failed, JournalUnavailable)  # an sqlite3.Error, as the channel sees it
        assert outcomes == list(range(1, 10))
        assert sorted(seen) == list(range(1, 10))  # no after-hook for the failed call
        assert await db.call(stored) == list(range(1, 10))  # its first insert rolled back
    finally:
        await db.close()


async def test_a_closed_thread_refuses_calls(tmp_path: Path) -> None:
    db = SqliteThread(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.call(insert(1))
    await db.close()
    with pytest.raises(JournalUnavailable):
        await db.call(insert(2))


async def test_the_outbox_lives_in_the_journals_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    outbox = SqliteOutbox(tmp_path / "unused.sqlite3", db=journal.db, dedup_ttl=0.2)
    await journal.start()
    await outbox.start()
    assert await journal.record("k1", "c1", b"{}") is Accepted.NEW
    assert await outbox.put("c1", [b"reply"], "k1#1")
    tables = await journal.db.call(
        lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    )
    assert {"journal", "journal_bodies", "outbox", "outbox_sources"} <= tables
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
    db = SqliteThread(tmp_path / "t.sqlite3", SCHEMA, "test-sqlite")
    await db.open()

    def checkpoint(conn: sqlite3.Connection) -> bool:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return bool(conn.in_transaction) or bool(busy)

    try:
        calls = [db.call(insert(n)) for n in range(20)]
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

    def sources(conn: sqlite3.Connection) -> List[str]:
        return [row[0] for row in conn.execute("SELECT source_key FROM outbox_sources")]

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
