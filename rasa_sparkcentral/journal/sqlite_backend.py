"""The embedded journal: SQLite in WAL mode on one dedicated thread (``sqlite_thread``),
leases in the process. Default path: ``.rasa/sparkcentral-journal.sqlite3`` under the
working directory (``rasa run`` runs in the bot project)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import List, Optional, Union

from rasa_sparkcentral.journal.base import (
    CLAIM_AFTER,
    DEDUP_TTL,
    Accepted,
    Entry,
    Instance,
    Journal,
)
from rasa_sparkcentral.journal.leases import LocalLeases
from rasa_sparkcentral.journal.sqlite_thread import SqliteThread

DEFAULT_PATH = Path(".rasa") / "sparkcentral-journal.sqlite3"
#: Expired keys are deleted after this many finishes (and by ``compact``).
COMPACT_EVERY = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  conversation_id TEXT NOT NULL,
  body BLOB,
  done INTEGER NOT NULL DEFAULT 0,
  accepted_by TEXT NOT NULL,
  accepted_at REAL NOT NULL,
  finished_at REAL
);
CREATE INDEX IF NOT EXISTS journal_work ON journal (conversation_id, seq) WHERE done = 0;
CREATE INDEX IF NOT EXISTS journal_expiry ON journal (finished_at) WHERE done = 1;
"""


class SqliteJournal(Journal):
    backend = "sqlite"

    def __init__(
        self,
        path: Union[str, Path] = DEFAULT_PATH,
        *,
        instance: Optional[Instance] = None,
        dedup_ttl: float = DEDUP_TTL,
        claim_after: float = CLAIM_AFTER,
    ) -> None:
        instance = instance or Instance.create()
        super().__init__(instance, LocalLeases(instance, claim_after), dedup_ttl=dedup_ttl)
        self.db = SqliteThread(path, SCHEMA, "sparkcentral-journal")
        self._since_compact = 0

    async def start(self) -> int:
        await self.db.open()
        return await super().start()

    async def _record(self, key: str, conversation_id: str, body: bytes) -> Accepted:
        token, ttl = self.instance.token, self.dedup_ttl

        def run(conn: sqlite3.Connection) -> Accepted:
            now = time.time()
            inserted = conn.execute(
                "INSERT INTO journal (key, conversation_id, body, accepted_by, accepted_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, conversation_id, body, token, now),
            ).rowcount
            if inserted:
                return Accepted.NEW
            row = conn.execute(
                "SELECT done, finished_at FROM journal WHERE key = ?", (key,)
            ).fetchone()
            if row is None:  # cannot happen while this thread is the only writer
                return Accepted.PENDING
            done, finished_at = row
            if not done:
                return Accepted.PENDING
            if finished_at >= now - ttl:
                return Accepted.DONE
            # a key finished longer ago than dedup_ttl is new again
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM journal WHERE key = ?", (key,))
            conn.execute(
                "INSERT INTO journal (key, conversation_id, body, accepted_by, accepted_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, conversation_id, body, token, now),
            )
            conn.execute("COMMIT")
            return Accepted.NEW

        return await self.db.call(run)

    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]:
        def run(conn: sqlite3.Connection) -> List[Entry]:
            rows = conn.execute(
                "SELECT seq, key, body, accepted_by, accepted_at FROM journal"
                " WHERE conversation_id = ? AND done = 0 ORDER BY seq LIMIT ?",
                (conversation_id, limit),
            ).fetchall()
            return [
                Entry(
                    key=key,
                    conversation_id=conversation_id,
                    body=bytes(body),
                    position=str(seq),
                    accepted_by=accepted_by,
                    accepted_at=accepted_at,
                )
                for seq, key, body, accepted_by, accepted_at in rows
            ]

        return await self.db.call(run)

    async def finish(self, entry: Entry, *, failed: bool = False) -> None:
        def run(conn: sqlite3.Connection) -> int:
            changed: int = conn.execute(
                "UPDATE journal SET done = 1, body = NULL, finished_at = ?"
                " WHERE key = ? AND done = 0",
                (time.time(), entry.key),
            ).rowcount
            return changed

        if await self.db.call(run):
            self._count_finish(entry, failed)
            self._since_compact += 1
            if self._since_compact >= COMPACT_EVERY:
                await self.compact()

    async def compact(self) -> int:
        self._since_compact = 0
        horizon = time.time() - self.dedup_ttl

        def run(conn: sqlite3.Connection) -> int:
            removed: int = conn.execute(
                "DELETE FROM journal WHERE done = 1 AND finished_at < ?", (horizon,)
            ).rowcount
            return removed

        return await self.db.call(run)

    async def conversations_with_work(self) -> List[str]:
        def run(conn: sqlite3.Connection) -> List[str]:
            rows = conn.execute(
                "SELECT DISTINCT conversation_id FROM journal WHERE done = 0"
            ).fetchall()
            return [row[0] for row in rows]

        return await self.db.call(run)

    async def pending(self) -> int:
        def run(conn: sqlite3.Connection) -> int:
            count: int = conn.execute("SELECT COUNT(*) FROM journal WHERE done = 0").fetchone()[0]
            return count

        return await self.db.call(run)

    async def close(self) -> None:
        await super().close()
        await self.db.close()
