"""Per-conversation leases: at most one holder runs a conversation's events at a time.

``LocalLeases`` live in the process (the embedded journal serves one process, so a lease
dies with it). ``RedisLeases`` are Redis keys set with NX and a time to live of
``claim_after``; a heartbeat task renews each held lease every ``claim_after / 3`` with a
compare-and-pexpire script, ``release`` deletes it with compare-and-delete. When a holder
dies its lease runs out after ``claim_after`` and any instance may take the conversation.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:
    from rasa_sparkcentral.journal.base import Instance
    from rasa_sparkcentral.journal.redis_client import RedisClients

logger = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
local n = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then n = redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return n
"""
# A lease under our name but from an earlier process (another nonce) is an orphan.
_RELEASE_ORPHAN = """
local v = redis.call('GET', KEYS[1])
local n = 0
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1]
   and string.sub(v, 1, string.len(ARGV[2])) ~= ARGV[2] then
  n = redis.call('DEL', KEYS[1])
end
if not v or n == 1 or string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then
  redis.call('SREM', KEYS[2], ARGV[3])
end
return n
"""


class Lease:
    """A held conversation. ``lost`` turns true when a renewal found the lease taken
    or could not reach the store for ``claim_after``: stop working on the conversation."""

    def __init__(self, conversation_id: str, token: str) -> None:
        self.conversation_id = conversation_id
        self.token = token
        self.lost = False
        self._heartbeat: Optional[asyncio.Task[None]] = None

    def __repr__(self) -> str:
        return f"<Lease {self.conversation_id!r} {self.token} lost={self.lost}>"


class Leases(abc.ABC):
    def __init__(self, instance: Instance, claim_after: float) -> None:
        self.instance = instance
        self.claim_after = claim_after
        self._counter = itertools.count(1)

    def _token(self) -> str:
        return f"{self.instance.token}|{next(self._counter)}"

    @abc.abstractmethod
    async def acquire(self, conversation_id: str) -> Optional[Lease]: ...

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None: ...

    async def release_orphans(self) -> int:
        return 0

    async def close(self) -> None:
        return None


class LocalLeases(Leases):
    """Leases inside one process (embedded journal): nothing outlives the process."""

    def __init__(self, instance: Instance, claim_after: float) -> None:
        super().__init__(instance, claim_after)
        self._held: Dict[str, Lease] = {}

    async def acquire(self, conversation_id: str) -> Optional[Lease]:
        if conversation_id in self._held:
            return None
        lease = Lease(conversation_id, self._token())
        self._held[conversation_id] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        if self._held.get(lease.conversation_id) is lease:
            del self._held[lease.conversation_id]


class RedisLeases(Leases):
    """Leases in Redis, shared by every instance; see the module docstring."""

    def __init__(
        self, clients: RedisClients, prefix: str, instance: Instance, claim_after: float
    ) -> None:
        super().__init__(instance, claim_after)
        self._clients = clients
        self._prefix = prefix
        self._ttl_ms = max(1, int(claim_after * 1000))
        self._held: Dict[str, Lease] = {}

    def _key(self, conversation_id: str) -> str:
        return f"{self._prefix}:{{{conversation_id}}}:lease"

    def _holder_key(self, name: str) -> str:
        return f"{self._prefix}:holder:{name}"

    async def acquire(self, conversation_id: str) -> Optional[Lease]:
        token = self._token()
        got = await self._clients.eval(
            _ACQUIRE,
            [self._key(conversation_id), self._holder_key(self.instance.name)],
            [token, self._ttl_ms, conversation_id],
        )
        if not got:
            return None
        lease = Lease(conversation_id, token)
        lease._heartbeat = asyncio.get_running_loop().create_task(self._beat(lease))
        self._held[token] = lease
        return lease

    async def release(self, lease: Lease) -> None:
        self._held.pop(lease.token, None)
        if lease._heartbeat is not None:
            lease._heartbeat.cancel()
            lease._heartbeat = None
        if lease.lost:
            return
        lease.lost = True
        await self._clients.eval(
            _RELEASE,
            [self._key(lease.conversation_id), self._holder_key(self.instance.name)],
            [lease.token, lease.conversation_id],
        )

    async def _beat(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        interval = self.claim_after / 3
        last_ok = loop.time()
        key = self._key(lease.conversation_id)
        while not lease.lost:
            await asyncio.sleep(interval)
            try:
                renewed = await self._clients.eval(_RENEW, [key], [lease.token, self._ttl_ms])
            except Exception as e:  # the store is down: the lease may still be ours
                if loop.time() - last_ok >= self.claim_after:
                    logger.warning("lease on %s lost: %s", lease.conversation_id, e)
                    lease.lost = True
                continue
            if not renewed:
                logger.warning("lease on %s was taken over", lease.conversation_id)
                lease.lost = True
            last_ok = loop.time()

    async def release_orphans(self) -> int:
        """Delete leases held under our name by an earlier process (another nonce)."""
        name = self.instance.name
        holder = self._holder_key(name)
        members: Any = await self._clients.call(lambda c: c.smembers(holder))
        released = 0
        for raw in members:
            cid = raw.decode() if isinstance(raw, bytes) else str(raw)
            released += int(
                await self._clients.eval(
                    _RELEASE_ORPHAN,
                    [self._key(cid), holder],
                    [f"{name}|", f"{self.instance.token}|", cid],
                )
            )
        if released:
            logger.info("released %d leases left by this instance's previous run", released)
        return released

    async def close(self) -> None:
        for lease in list(self._held.values()):
            try:
                await self.release(lease)
            except Exception as e:  # they run out after claim_after anyway
                logger.debug("lease release on close failed: %s", e)
