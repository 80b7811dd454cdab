"""The embedded journal: SQLite in WAL mode in a worker process (``sqlite_process``),
leases in the process. Bodies live in their own table and are deleted at finish, so their
pages are freed whole and reused (a body nulled in place would leave a hole per message
in pages that new rows, appended at the end, never fill). Default path:
``.rasa/sparkcentral-journal.sqlite3`` under the working directory (``rasa run`` runs in
the bot project).

The file is this process's alone (a lock file keeps others out), so what it holds
unfinished is also kept in memory, updated when the worker answers that a call committed:
``unfinished``, ``conversations_with_work`` and ``pending`` read that copy, and a message
costs two calls to the worker (``record``, ``finish``), each a statement or two in a
transaction shared with whatever else reached it (``sqlite_worker``'s group commit)."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from rasa_sparkcentral.journal.base import (
    CLAIM_AFTER,
    DEDUP_TTL,
    Accepted,
    Entry,
    Instance,
    Journal,
    by_conversation,
    replace_queued,
)
from rasa_sparkcentral.journal.leases import LocalLeases
from rasa_sparkcentral.journal.sqlite_process import SqliteProcess

DEFAULT_PATH = Path(".rasa") / "sparkcentral-journal.sqlite3"
#: Expired keys are deleted after this many finishes (and by ``compact``).
COMPACT_EVERY = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
  seq INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  conversation_id TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  accepted_by TEXT NOT NULL,
  accepted_at REAL NOT NULL,
  finished_at REAL
);
CREATE INDEX IF NOT EXISTS journal_work ON journal (conversation_id, seq) WHERE done = 0;
CREATE INDEX IF NOT EXISTS journal_expiry ON journal (finished_at) WHERE done = 1;
CREATE TABLE IF NOT EXISTS journal_bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
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
        self.db = SqliteProcess(path, SCHEMA, "sparkcentral-journal")
        self._since_compact = 0
        #: the unfinished entries by conversation, oldest first (written on the calling
        #: loop when the worker answers; read anywhere: list and dict operations are atomic)
        self._open: Dict[str, List[Entry]] = {}

    async def start(self) -> int:
        await self.db.open()
        self._reload(await self.db.call(_unfinished_entries))
        self.db.on_new_worker(_unfinished_entries, self._reload)
        return await super().start()

    def _reload(self, entries: List[Entry]) -> None:
        self._open = by_conversation(entries)

    async def _record(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]:
        return await _record_through(
            self.db,
            self.instance.token,
            self.dedup_ttl,
            key,
            conversation_id,
            body,
            keep=self._keep,
        )

    def _keep(self, entry: Entry) -> None:
        by_conversation([entry], self._open)

    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]:
        return list(self._open.get(conversation_id, ()))[:limit]

    async def finish(self, entry: Entry, *, failed: bool = False) -> None:
        def drop(changed: int) -> None:
            replace_queued(self._open, entry)

        if await self.db.call(_finish, int(entry.position), after=drop):
            self._count_finish(entry, failed)
            self._since_compact += 1
            if self._since_compact >= COMPACT_EVERY:
                await self.compact()

    async def compact(self) -> int:
        self._since_compact = 0
        return await self.db.call(_compact, time.time() - self.dedup_ttl)

    async def conversations_with_work(self) -> List[str]:
        return [cid for cid, entries in list(self._open.items()) if entries]

    async def pending(self) -> int:
        return sum(len(entries) for entries in list(self._open.values()))

    async def close(self) -> None:
        await super().close()
        await self.db.close()


class SqliteRecorder:
    """Records into the bot's embedded journal from another process (the ``webhook_port``
    listener) through a socket to the journal's worker (``SqliteProcess.link_socket``):
    the same statement and commit as ``SqliteJournal.record``; the bot's journal then
    ``adopt``s the entry. A socket whose worker ended stays dead (``lost``): the process
    that holds it is started again with a new one."""

    def __init__(self, sock: socket.socket, instance: Instance, dedup_ttl: float) -> None:
        self.db = SqliteProcess.attached(sock, "sparkcentral-journal")
        self.instance = instance
        self.dedup_ttl = dedup_ttl

    @property
    def lost(self) -> bool:
        return self.db.lost

    async def record_entry(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]:
        return await _record_through(
            self.db, self.instance.token, self.dedup_ttl, key, conversation_id, body
        )

    async def close(self) -> None:
        await self.db.close()


async def _record_through(
    db: SqliteProcess,
    token: str,
    dedup_ttl: float,
    key: str,
    conversation_id: str,
    body: bytes,
    keep: Optional[Callable[[Entry], None]] = None,
) -> Tuple[Accepted, Optional[Entry]]:
    """``_record`` in the worker; the new entry, if any (``keep`` gets it on the calling
    loop once committed, before the caller resumes)."""
    new: List[Entry] = []

    def made(outcome: Tuple[Accepted, Optional[Inserted]]) -> None:
        # the worker answers with the row's place, not the body it was sent
        if outcome[1] is not None:
            position, accepted_at = outcome[1]
            new.append(Entry(key, conversation_id, body, position, token, accepted_at))
            if keep is not None:
                keep(new[0])

    accepted, _ = await db.call(_record, key, conversation_id, body, token, dedup_ttl, after=made)
    return accepted, (new[0] if new else None)


# -- the statements, run by the SQLite worker (module-level: they are sent by name) --------


def _unfinished_entries(conn: sqlite3.Connection) -> List[Entry]:
    rows = conn.execute(
        "SELECT j.seq, key, conversation_id, body, accepted_by, accepted_at"
        " FROM journal j JOIN journal_bodies b ON b.seq = j.seq"
        " WHERE done = 0 ORDER BY j.seq"
    )
    return [
        Entry(key, conversation_id, bytes(body), str(seq), accepted_by, accepted_at)
        for seq, key, conversation_id, body, accepted_by, accepted_at in rows
    ]


#: Where a new entry went: (position, accepted_at).
Inserted = Tuple[str, float]


def _insert(
    conn: sqlite3.Connection, key: str, conversation_id: str, body: bytes, token: str, now: float
) -> Optional[Inserted]:
    cursor = conn.execute(
        "INSERT INTO journal (key, conversation_id, accepted_by, accepted_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        (key, conversation_id, token, now),
    )
    if not cursor.rowcount:
        return None
    conn.execute("INSERT INTO journal_bodies (seq, body) VALUES (?, ?)", (cursor.lastrowid, body))
    return str(cursor.lastrowid), now


def _record(
    conn: sqlite3.Connection, key: str, conversation_id: str, body: bytes, token: str, ttl: float
) -> Tuple[Accepted, Optional[Inserted]]:
    now = time.time()
    inserted = _insert(conn, key, conversation_id, body, token, now)
    if inserted is not None:
        return Accepted.NEW, inserted
    row = conn.execute("SELECT done, finished_at FROM journal WHERE key = ?", (key,)).fetchone()
    if row is None:  # cannot happen while the worker is the only writer
        return Accepted.PENDING, None
    done, finished_at = row
    if not done:
        return Accepted.PENDING, None
    if finished_at >= now - ttl:
        return Accepted.DONE, None
    # a key finished longer ago than dedup_ttl is new again
    conn.execute("DELETE FROM journal WHERE key = ?", (key,))
    return Accepted.NEW, _insert(conn, key, conversation_id, body, token, now)


def _finish(conn: sqlite3.Connection, seq: int) -> int:
    changed: int = conn.execute(
        "UPDATE journal SET done = 1, finished_at = ? WHERE seq = ? AND done = 0",
        (time.time(), seq),
    ).rowcount
    conn.execute("DELETE FROM journal_bodies WHERE seq = ?", (seq,))
    return changed


def _compact(conn: sqlite3.Connection, horizon: float) -> int:
    removed: int = conn.execute(
        "DELETE FROM journal WHERE done = 1 AND finished_at < ?", (horizon,)
    ).rowcount
    return removed
