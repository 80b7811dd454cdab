"""The durable per-conversation queue of reply bodies (issue 13), and the retry delay.

A turn's replies are ``put`` in order (once per ``source_key``, the idempotencyKey of the
event that produced them, so a replayed turn does not queue them twice); a sender takes
the conversation's oldest item with ``peek``, posts it, and calls ``done`` — or
``attempted`` after a failure and ``give_up`` once ``next_retry_delay`` says the item's
deadline (the platform's reply timeout, 300 s by default) leaves no room. The sender
holds the conversation's outbox lease (``acquire``) while it sends, so one instance sends
a conversation's replies, in order.

Backends: SQLite (embedded, in the journal's worker process, with the unsent items also
kept in memory so that ``peek`` needs no trip to the worker) and Redis (a stream per
conversation; attempts in a hash beside it).
"""

from __future__ import annotations

import abc
import random
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from rasa_sparkcentral.journal.base import (
    CLAIM_AFTER,
    DEDUP_TTL,
    Instance,
    by_conversation,
    replace_queued,
)
from rasa_sparkcentral.journal.leases import Lease, Leases, LocalLeases, RedisLeases
from rasa_sparkcentral.journal.redis_client import REDIS_TIMEOUT, RedisClients
from rasa_sparkcentral.journal.sqlite_process import SqliteProcess

DEFAULT_PATH = Path(".rasa") / "sparkcentral-outbox.sqlite3"
#: Sparkcentral hands a conversation to a human when the bot has not answered in 5 min.
REPLY_DEADLINE = 300.0
REDIS_PREFIX = "rasa_sparkcentral:outbox"
#: The SQLite outbox compacts (forgets source keys older than dedup_ttl) after this many puts.
COMPACT_EVERY = 512


@dataclass(frozen=True)
class OutboxItem:
    conversation_id: str
    #: Backend order token, increasing per conversation.
    position: str
    body: bytes
    source_key: str
    created_at: float
    #: Wall-clock time (``time.time()``) after which the item is given up.
    deadline: float
    attempts: int


@dataclass(frozen=True)
class OutboxCounts:
    backend: str
    put: int
    sent: int
    given_up: int
    pending: int


def next_retry_delay(
    attempts: int,
    *,
    now: float,
    deadline: float,
    base: float = 0.5,
    cap: float = 30.0,
    retry_after: Optional[float] = None,
    rand: Callable[[], float] = random.random,
) -> Optional[float]:
    """Seconds to wait before the next attempt, after ``attempts`` failed ones; None when
    the deadline leaves no room (give up).

    Exponential (``base * 2**(attempts-1)``, at most ``cap``) with equal jitter (half
    fixed, half random, so a down platform is not hammered in lockstep). A ``Retry-After``
    from the platform is honoured as it is, unless it ends after the deadline. The delay
    is cut to the time left, so the last attempt happens at the deadline.
    """
    remaining = deadline - now
    if remaining <= 0:
        return None
    if retry_after is not None:
        wait = max(0.0, retry_after)
        return wait if wait < remaining else None
    step = min(cap, base * 2.0 ** max(0, min(attempts - 1, 62)))
    wait = step / 2 + rand() * step / 2
    return min(wait, remaining)


class Outbox(abc.ABC):
    backend: str = ""

    def __init__(self, leases: Leases, *, reply_deadline: float, dedup_ttl: float) -> None:
        self.leases = leases
        self.reply_deadline = reply_deadline
        self.dedup_ttl = dedup_ttl
        self._put = 0
        self._sent = 0
        self._given_up = 0

    async def start(self) -> int:
        return await self.leases.release_orphans()

    @abc.abstractmethod
    async def put(self, conversation_id: str, bodies: Sequence[bytes], source_key: str) -> bool:
        """Queue a turn's reply bodies, in order, durably; False (nothing queued) when
        ``source_key`` was put before (within ``dedup_ttl``)."""

    @abc.abstractmethod
    async def peek(self, conversation_id: str) -> Optional[OutboxItem]:
        """The conversation's oldest unsent item."""

    @abc.abstractmethod
    async def attempted(self, item: OutboxItem) -> OutboxItem:
        """Count a failed attempt; returns the item with its new count."""

    @abc.abstractmethod
    async def _remove(self, item: OutboxItem) -> bool: ...

    async def done(self, item: OutboxItem) -> None:
        """The item was delivered."""
        if await self._remove(item):
            self._sent += 1

    async def give_up(self, item: OutboxItem) -> None:
        """The item's deadline passed: drop it (the caller logs conversation, source key
        and body length, never the text)."""
        if await self._remove(item):
            self._given_up += 1

    @abc.abstractmethod
    async def conversations_with_work(self) -> List[str]: ...

    @abc.abstractmethod
    async def pending(self) -> int: ...

    async def compact(self) -> int:
        """Forget source keys older than ``dedup_ttl`` (Redis expires them by itself)."""
        return 0

    async def acquire(self, conversation_id: str) -> Optional[Lease]:
        return await self.leases.acquire(conversation_id)

    async def release(self, lease: Lease) -> None:
        await self.leases.release(lease)

    async def counts(self) -> OutboxCounts:
        return OutboxCounts(
            self.backend, self._put, self._sent, self._given_up, await self.pending()
        )

    async def close(self) -> None:
        await self.leases.close()


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY,
  conversation_id TEXT NOT NULL,
  body BLOB NOT NULL,
  source_key TEXT NOT NULL,
  created_at REAL NOT NULL,
  deadline REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_conversation ON outbox (conversation_id, seq);
CREATE TABLE IF NOT EXISTS outbox_sources (source_key TEXT PRIMARY KEY, put_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_sources_age ON outbox_sources (put_at);
"""
_COLUMNS = "seq, conversation_id, body, source_key, created_at, deadline, attempts"


def _item(row: Any) -> OutboxItem:
    seq, cid, body, source_key, created_at, deadline, attempts = row
    return OutboxItem(cid, str(seq), bytes(body), source_key, created_at, deadline, attempts)


class SqliteOutbox(Outbox):
    """The file is this process's alone (like the journal's), so the unsent items are
    also kept in memory, changed when the worker answers that a call committed."""

    backend = "sqlite"

    def __init__(
        self,
        path: Union[str, Path] = DEFAULT_PATH,
        *,
        instance: Optional[Instance] = None,
        reply_deadline: float = REPLY_DEADLINE,
        dedup_ttl: float = DEDUP_TTL,
        claim_after: float = CLAIM_AFTER,
        db: Optional[SqliteProcess] = None,
    ) -> None:
        """``db``: the journal's SQLite worker, to keep the outbox in the journal's file
        (its calls then share the journal's transactions); else a file of its own."""
        instance = instance or Instance.create()
        super().__init__(
            LocalLeases(instance, claim_after), reply_deadline=reply_deadline, dedup_ttl=dedup_ttl
        )
        if db is None:
            db = SqliteProcess(path, SCHEMA, "sparkcentral-outbox")
        else:
            db.add_schema(SCHEMA)
        self.db = db
        #: the unsent items by conversation, oldest first
        self._queues: Dict[str, List[OutboxItem]] = {}
        self._since_compact = 0

    async def start(self) -> int:
        await self.db.open()
        self._reload(await self.db.call(_unsent))
        self.db.on_new_worker(_unsent, self._reload)
        return await super().start()

    def _reload(self, items: List[OutboxItem]) -> None:
        self._queues = by_conversation(items)

    async def put(self, conversation_id: str, bodies: Sequence[bytes], source_key: str) -> bool:
        now = time.time()
        deadline = now + self.reply_deadline
        bodies = list(bodies)

        def keep(outcome: Tuple[bool, List[str]]) -> None:
            # the worker answers with the rows' places, not the bodies it was sent
            items = [
                OutboxItem(conversation_id, position, body, source_key, now, deadline, 0)
                for position, body in zip(outcome[1], bodies)
            ]
            by_conversation(items, self._queues)

        queued, positions = await self.db.call(
            _put, conversation_id, bodies, source_key, now, deadline, after=keep
        )
        self._put += len(positions)
        self._since_compact += 1
        if self._since_compact >= COMPACT_EVERY:
            await self.compact()
        return queued

    async def peek(self, conversation_id: str) -> Optional[OutboxItem]:
        queue = self._queues.get(conversation_id)
        return queue[0] if queue else None

    async def attempted(self, item: OutboxItem) -> OutboxItem:
        def count(attempts: Optional[int]) -> None:
            replace_queued(self._queues, item, _with_attempts(item, attempts))

        attempts = await self.db.call(_attempted, int(item.position), after=count)
        return _with_attempts(item, attempts)

    async def _remove(self, item: OutboxItem) -> bool:
        return await self.db.call(
            _delete, int(item.position), after=lambda _: replace_queued(self._queues, item)
        )

    async def compact(self) -> int:
        self._since_compact = 0
        return await self.db.call(_forget_sources, time.time() - self.dedup_ttl)

    async def conversations_with_work(self) -> List[str]:
        return [cid for cid, queue in list(self._queues.items()) if queue]

    async def pending(self) -> int:
        return sum(len(queue) for queue in list(self._queues.values()))

    async def close(self) -> None:
        await super().close()
        await self.db.close()


def _with_attempts(item: OutboxItem, attempts: Optional[int]) -> OutboxItem:
    return replace(item, attempts=item.attempts + 1 if attempts is None else attempts)


# -- the statements, run by the SQLite worker (module-level: they are sent by name) --------


def _unsent(conn: sqlite3.Connection) -> List[OutboxItem]:
    return [_item(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY seq")]


def _put(
    conn: sqlite3.Connection,
    conversation_id: str,
    bodies: List[bytes],
    source_key: str,
    now: float,
    deadline: float,
) -> Tuple[bool, List[str]]:
    """Whether the source was new, and the positions of its bodies, in order."""
    fresh = conn.execute(
        "INSERT INTO outbox_sources VALUES (?, ?) ON CONFLICT DO NOTHING", (source_key, now)
    ).rowcount
    positions: List[str] = []
    if not fresh:
        return False, positions
    for body in bodies:
        seq = conn.execute(
            "INSERT INTO outbox (conversation_id, body, source_key, created_at, deadline)"
            " VALUES (?, ?, ?, ?, ?)",
            (conversation_id, body, source_key, now, deadline),
        ).lastrowid
        positions.append(str(seq))
    return True, positions


def _attempted(conn: sqlite3.Connection, seq: int) -> Optional[int]:
    """The attempts counted for the item (None: it is gone)."""
    conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
    row = conn.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else int(row[0])


def _delete(conn: sqlite3.Connection, seq: int) -> bool:
    return bool(conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount)


def _forget_sources(conn: sqlite3.Connection, horizon: float) -> int:
    return int(conn.execute("DELETE FROM outbox_sources WHERE put_at < ?", (horizon,)).rowcount)


# KEYS: source marker, stream, work set, pending counter
# ARGV: source key, created, deadline, conversation id, dedup ttl, body...
_PUT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[5]) then return 0 end
for i = 6, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[i], 's', ARGV[1], 'c', ARGV[2], 'd', ARGV[3])
end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('INCRBY', KEYS[4], #ARGV - 5)
return 1
"""
# KEYS: stream, attempts hash, work set, pending counter; ARGV: stream id, conversation id
_REMOVE = """
local n = redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if n > 0 then redis.call('DECRBY', KEYS[4], n) end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return n
"""


class RedisOutbox(Outbox):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        instance: Optional[Instance] = None,
        reply_deadline: float = REPLY_DEADLINE,
        dedup_ttl: float = DEDUP_TTL,
        claim_after: float = CLAIM_AFTER,
        timeout: float = REDIS_TIMEOUT,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        instance = instance or Instance.create()
        self.redis = RedisClients(url, "outbox (redis)", timeout=timeout)
        super().__init__(
            RedisLeases(self.redis, prefix, instance, claim_after),
            reply_deadline=reply_deadline,
            dedup_ttl=dedup_ttl,
        )
        self._prefix = prefix
        self._work = f"{prefix}:work"
        self._pending = f"{prefix}:pending"

    def _key(self, conversation_id: str, kind: str) -> str:
        return f"{self._prefix}:{{{conversation_id}}}:{kind}"

    async def put(self, conversation_id: str, bodies: Sequence[bytes], source_key: str) -> bool:
        if not bodies:
            return True
        now = time.time()
        queued = await self.redis.eval(
            _PUT,
            [
                self._key(conversation_id, f"source:{source_key}"),
                self._key(conversation_id, "replies"),
                self._work,
                self._pending,
            ],
            [
                source_key,
                repr(now),
                repr(now + self.reply_deadline),
                conversation_id,
                max(1, int(self.dedup_ttl)),
                *bodies,
            ],
        )
        if queued:
            self._put += len(bodies)
        return bool(queued)

    async def peek(self, conversation_id: str) -> Optional[OutboxItem]:
        stream = self._key(conversation_id, "replies")
        attempts_key = self._key(conversation_id, "attempts")

        async def run(client: Any) -> Any:
            rows = await client.xrange(stream, "-", "+", count=1)
            if not rows:
                return None
            return rows[0], await client.hget(attempts_key, rows[0][0])

        found = await self.redis.call(run)
        if found is None:
            return None
        (stream_id, fields), attempts = found
        return OutboxItem(
            conversation_id=conversation_id,
            position=stream_id.decode(),
            body=bytes(fields[b"b"]),
            source_key=fields[b"s"].decode(),
            created_at=float(fields[b"c"]),
            deadline=float(fields[b"d"]),
            attempts=int(attempts or 0),
        )

    async def attempted(self, item: OutboxItem) -> OutboxItem:
        key = self._key(item.conversation_id, "attempts")
        count = await self.redis.call(lambda c: c.hincrby(key, item.position, 1))
        return replace(item, attempts=int(count))

    async def _remove(self, item: OutboxItem) -> bool:
        cid = item.conversation_id
        removed = await self.redis.eval(
            _REMOVE,
            [self._key(cid, "replies"), self._key(cid, "attempts"), self._work, self._pending],
            [item.position, cid],
        )
        return bool(removed)

    async def conversations_with_work(self) -> List[str]:
        work = self._work
        members: Any = await self.redis.call(lambda c: c.smembers(work))
        return sorted(m.decode() for m in members)

    async def pending(self) -> int:
        key = self._pending
        return int(await self.redis.call(lambda c: c.get(key)) or 0)

    async def close(self) -> None:
        await super().close()
        await self.redis.close()


def make_outbox(
    redis_url: Optional[str],
    *,
    path: Union[str, Path] = DEFAULT_PATH,
    instance: Optional[Instance] = None,
    reply_deadline: float = REPLY_DEADLINE,
    dedup_ttl: float = DEDUP_TTL,
    claim_after: float = CLAIM_AFTER,
    sqlite: Optional[SqliteProcess] = None,
) -> Outbox:
    """Redis when ``redis_url`` is set, else SQLite: in the file ``sqlite`` serves (the
    journal's), or at ``path``."""
    if redis_url:
        return RedisOutbox(
            redis_url,
            instance=instance,
            reply_deadline=reply_deadline,
            dedup_ttl=dedup_ttl,
            claim_after=claim_after,
        )
    return SqliteOutbox(
        path,
        instance=instance,
        reply_deadline=reply_deadline,
        dedup_ttl=dedup_ttl,
        claim_after=claim_after,
        db=sqlite,
    )
