"""The shared journal in Redis (``redis_url``): one stream per conversation holds its
unfinished events in arrival order (XADD on accept, XDEL on finish, the key deleted when
empty), a set names the conversations with work, a key per idempotencyKey says
``r`` (received) or ``d`` (done, expires after ``dedup_ttl``), and leases order the work.

No consumer groups: a group hands entries to whichever consumer reads next, and its
pending-entry claiming (XAUTOCLAIM) works per entry on idle time. Order needs one holder
per conversation that runs the entries one after the other and keeps the conversation
while a slow turn runs; a heartbeat lease gives exactly that, and the holder simply reads
the stream from its start (finished entries are deleted), with no PEL and no XACK.

Keys carry the conversation id as a hash tag, ``rasa_sparkcentral:journal:{cid}:...``.
Durability is Redis's: an accepted event is in Redis memory and survives every
``rasa run`` crash; surviving a Redis restart needs Redis persistence (AOF).

A record carries a deadline on Redis's clock (the caller's read timeout, less a margin):
a frozen Redis keeps the command in its socket buffer and would run it once thawed,
after the webhook was answered 503; past the deadline the script writes nothing, so a
503 leaves no record behind (a platform that gave up is not answered later), unless the
answer itself is lost within the last ``LATE_MARGIN`` seconds. The
clock offset to Redis is learned from the records' answers (the largest of the recent
measurements, each of which is low by the time the answer took to be read); the first
record of a process has no deadline.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Deque, List, Optional, Tuple

from rasa_sparkcentral.journal.base import (
    CLAIM_AFTER,
    DEDUP_TTL,
    Accepted,
    Entry,
    Instance,
    Journal,
    JournalUnavailable,
)
from rasa_sparkcentral.journal.leases import RedisLeases
from rasa_sparkcentral.journal.redis_client import REDIS_TIMEOUT, RedisClients

PREFIX = "rasa_sparkcentral:journal"
#: A received key outlives any sensible outage; it is turned into "done" on finish.
RECEIVED_TTL = 7 * 24 * 3600

#: Seconds before the caller's read timeout after which a record is refused (the answer
#: must still reach the caller in time).
LATE_MARGIN = 0.25
#: The clock offset to Redis is the largest of this many recent measurements (each one is
#: low by however long the answer took to be read, a busy event loop included).
OFFSET_SAMPLES = 32

# KEYS: dedup, stream, work set, pending counter
# ARGV: key, body, accepted_by, accepted_at, conversation id, received ttl,
#       deadline on Redis's clock (0: none)
# Returns {state, Redis time}; state 'l': past the deadline, nothing written.
_RECORD = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local deadline = tonumber(ARGV[7])
if deadline > 0 and tonumber(now) > deadline then return {'l', now} end
local state = redis.call('GET', KEYS[1])
if state then return {state, now} end
redis.call('XADD', KEYS[2], '*', 'k', ARGV[1], 'b', ARGV[2], 'i', ARGV[3], 't', ARGV[4])
redis.call('SET', KEYS[1], 'r', 'EX', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('INCR', KEYS[4])
return {'n', now}
"""
# KEYS: dedup, stream, work set, pending counter; ARGV: stream id, dedup ttl, conversation id
_FINISH = """
local n = redis.call('XDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], 'd', 'EX', ARGV[2])
if n > 0 then redis.call('DECRBY', KEYS[4], n) end
if redis.call('XLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[3])
end
return n
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisJournal(Journal):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        instance: Optional[Instance] = None,
        dedup_ttl: float = DEDUP_TTL,
        claim_after: float = CLAIM_AFTER,
        timeout: float = REDIS_TIMEOUT,
        prefix: str = PREFIX,
    ) -> None:
        instance = instance or Instance.create()
        self.redis = RedisClients(url, "journal (redis)", timeout=timeout)
        super().__init__(
            instance,
            RedisLeases(self.redis, prefix, instance, claim_after),
            dedup_ttl=dedup_ttl,
        )
        self._prefix = prefix
        self._work = f"{prefix}:work"
        self._pending = f"{prefix}:pending"
        #: Redis's clock minus ours (seconds), as measured by recent records
        self._offsets: Deque[float] = collections.deque(maxlen=OFFSET_SAMPLES)
        self._offsets_lock = threading.Lock()  # callers may run on several threads' loops

    def _stream(self, conversation_id: str) -> str:
        return f"{self._prefix}:{{{conversation_id}}}:events"

    def _dedup(self, conversation_id: str, key: str) -> str:
        return f"{self._prefix}:{{{conversation_id}}}:key:{key}"

    async def _record(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]:
        now = time.time()
        deadline = 0.0
        with self._offsets_lock:
            offset = max(self._offsets) if self._offsets else None
        if offset is not None:
            deadline = now + offset + self.redis.timeout - LATE_MARGIN
        state, redis_now = await self.redis.eval(
            _RECORD,
            [
                self._dedup(conversation_id, key),
                self._stream(conversation_id),
                self._work,
                self._pending,
            ],
            [
                key,
                body,
                self.instance.token,
                repr(now),
                conversation_id,
                RECEIVED_TTL,
                repr(deadline),
            ],
        )
        with self._offsets_lock:
            self._offsets.append(float(redis_now) - time.time())
        if state == b"l":  # Redis ran it after we would have given up: nothing written
            raise JournalUnavailable("redis: the record reached Redis after its deadline")
        outcome = {b"n": Accepted.NEW, b"r": Accepted.PENDING}.get(state, Accepted.DONE)
        return outcome, None  # the stream is the only copy

    def _keep(self, entry: Entry) -> None:
        """Nothing: the stream is the only copy (``unfinished`` reads it)."""

    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]:
        stream = self._stream(conversation_id)
        rows: Any = await self.redis.call(lambda c: c.xrange(stream, "-", "+", count=limit))
        return [
            Entry(
                key=_text(fields[b"k"]),
                conversation_id=conversation_id,
                body=bytes(fields[b"b"]),
                position=_text(stream_id),
                accepted_by=_text(fields[b"i"]),
                accepted_at=float(fields[b"t"]),
            )
            for stream_id, fields in rows
        ]

    async def finish(self, entry: Entry, *, failed: bool = False) -> None:
        cid = entry.conversation_id
        removed = await self.redis.eval(
            _FINISH,
            [self._dedup(cid, entry.key), self._stream(cid), self._work, self._pending],
            [entry.position, max(1, int(self.dedup_ttl)), cid],
        )
        if removed:
            self._count_finish(entry, failed)

    async def conversations_with_work(self) -> List[str]:
        work = self._work
        members: Any = await self.redis.call(lambda c: c.smembers(work))
        return sorted(_text(m) for m in members)

    async def pending(self) -> int:
        key = self._pending
        value: Any = await self.redis.call(lambda c: c.get(key))
        return int(value or 0)

    async def close(self) -> None:
        await super().close()
        await self.redis.close()
