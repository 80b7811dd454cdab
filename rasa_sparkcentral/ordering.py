"""Per-conversation order: queues, turn tickets and turn slots (``Ordering``).

Each conversation's turns run one after the other, in the order their webhooks were
received; different conversations run side by side, at most ``max_concurrent_turns`` at
once. With several ``rasa run`` instances, a ticket taken from Redis on arrival places
each turn after every turn of the conversation any instance received before it.

The ticket backend sits behind ``TurnTickets`` (take / wait / finish), so that another
way of handing out turns (leases with a heartbeat, say) can replace it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Coroutine, Deque, Dict, Optional, Set, Tuple

from rasa_sparkcentral.state import CONVERSATION_TTL, KEY_PREFIX

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]

#: How long a conversation's turn counters are kept without activity.
TICKET_TTL = int(CONVERSATION_TTL)
#: How often a turn waiting for an earlier one (on another instance) looks again.
TURN_POLL_MIN = 0.005
TURN_POLL_MAX = 0.05

# Turn tickets: "issued" counts the conversation's events in arrival order, "served" is
# the highest ticket whose turn is over. A fresh counter clears a stale "served".
_TAKE_TURN = """
local ticket = redis.call('INCR', KEYS[1])
if ticket == 1 then redis.call('DEL', KEYS[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return ticket
"""
_FINISH_TURN = """
local served = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > served then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


class TurnTickets:
    """Where turns are ordered across instances. This base class serves one process,
    whose own queues keep the order: it hands out no ticket and never suspends."""

    async def take(self, conversation_id: str) -> Optional[int]:
        """A ticket placing this event after every event of the conversation that any
        instance received before it (None: no cross-instance order needed)."""
        return None

    async def wait(self, conversation_id: str, ticket: int, timeout: float) -> bool:
        """Wait until the turns of every earlier ticket are over; False after ``timeout``."""
        return True

    async def finish(self, conversation_id: str, ticket: int) -> None:
        """The turn of ``ticket`` is over (its replies are sent)."""
        return None

    async def close(self) -> None:
        return None


class RedisTickets(TurnTickets):
    """Turn tickets in Redis, shared by every instance of the bot."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis_asyncio  # optional dependency: extra "redis"

        self._redis: Any = redis_asyncio.Redis.from_url(url)

    @staticmethod
    def keys(conversation_id: str) -> Tuple[str, str]:
        """The "issued" and "served" keys; one hash tag for both keys, so that a Redis
        Cluster keeps them in one slot."""
        base = f"{KEY_PREFIX}:turn:{{{conversation_id}}}"
        return f"{base}:issued", f"{base}:served"

    async def take(self, conversation_id: str) -> Optional[int]:
        issued, served = self.keys(conversation_id)
        ticket = await self._redis.eval(_TAKE_TURN, 2, issued, served, TICKET_TTL)
        return int(ticket)

    async def wait(self, conversation_id: str, ticket: int, timeout: float) -> bool:
        _, served = self.keys(conversation_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = TURN_POLL_MIN
        while True:
            if int(await self._redis.get(served) or 0) >= ticket - 1:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, TURN_POLL_MAX)

    async def finish(self, conversation_id: str, ticket: int) -> None:
        _, served = self.keys(conversation_id)
        await self._redis.eval(_FINISH_TURN, 1, served, ticket, TICKET_TTL)

    async def close(self) -> None:
        await self._redis.aclose() if hasattr(self._redis, "aclose") else await self._redis.close()


def make_tickets(redis_url: Optional[str]) -> TurnTickets:
    return RedisTickets(redis_url) if redis_url else TurnTickets()


class Ordering:
    """Runs each conversation's turns in arrival order, bounded by the turn slots."""

    def __init__(
        self,
        tickets: Optional[TurnTickets] = None,
        *,
        max_concurrent_turns: int = 8,
        order_timeout: float = 60.0,
    ) -> None:
        self.tickets = tickets or TurnTickets()
        self.max_concurrent_turns = max_concurrent_turns
        self.order_timeout = order_timeout
        self._queues: Dict[str, Deque[Job]] = {}
        self._tasks: Set[asyncio.Task[None]] = set()
        self._ticketing: Dict[str, asyncio.Future[None]] = {}
        self._slots: Optional[asyncio.Semaphore] = None

    @property
    def pending_conversations(self) -> int:
        """Conversations with a turn running or queued."""
        return len(self._queues)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that ``aclose`` waits for."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def submit(self, conversation_id: str, turn: Job, then: Optional[Job] = None) -> None:
        """Queue ``turn`` after every turn of the conversation submitted before it (here,
        or on any instance sharing the tickets); returns once it is queued.

        ``turn`` runs holding a turn slot; ``then`` runs after it (also when it failed)
        without a slot but before the conversation's next turn.

        One event at a time per conversation takes its ticket and joins the queue, so
        that this instance's queue and the tickets agree (a later ticket ahead of an
        earlier one would wait for it).
        """
        previous = self._ticketing.get(conversation_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticketing[conversation_id] = mine
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            ticket: Optional[int] = None
            try:
                ticket = await self.tickets.take(conversation_id)
            except Exception as e:
                logger.error(
                    "Conversation %s: could not take a turn ticket from the shared state "
                    "(%s); its order across instances is not guaranteed",
                    conversation_id,
                    type(e).__name__,
                )
            self._enqueue(conversation_id, self._job(conversation_id, ticket, turn, then))
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._ticketing.get(conversation_id) is mine:
                del self._ticketing[conversation_id]

    def _job(
        self, conversation_id: str, ticket: Optional[int], turn: Job, then: Optional[Job]
    ) -> Job:
        async def job() -> None:
            try:
                if ticket is not None:
                    await self._wait_turn(conversation_id, ticket)
                async with self._turn_slot():
                    await turn()
            finally:
                try:
                    if then is not None:
                        await then()
                finally:
                    if ticket is not None:
                        await self._finish_turn(conversation_id, ticket)

        return job

    def _turn_slot(self) -> asyncio.Semaphore:
        """Bounds the turns Rasa works on at once. Rasa's NLU and policies run on the
        event loop that also answers webhooks: fewer turns in flight keep the
        acknowledgement fast without costing throughput."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_turns)
        return self._slots

    async def _wait_turn(self, conversation_id: str, ticket: int) -> None:
        """Wait until the conversation's earlier events (on any instance) are handled."""
        timeout = self.order_timeout
        try:
            in_turn = await self.tickets.wait(conversation_id, ticket, timeout)
        except Exception as e:
            logger.error(
                "Conversation %s: could not check the order of its messages (%s); going on",
                conversation_id,
                type(e).__name__,
            )
            return
        if not in_turn:
            logger.warning(
                "Conversation %s: an earlier message was still not handled after %.0fs "
                "(did an instance stop?); handling the next one",
                conversation_id,
                timeout,
            )

    async def _finish_turn(self, conversation_id: str, ticket: int) -> None:
        try:
            await self.tickets.finish(conversation_id, ticket)
        except Exception as e:
            logger.error(
                "Conversation %s: could not record a handled message in the shared state "
                "(%s); its next message waits up to %.0fs",
                conversation_id,
                type(e).__name__,
                self.order_timeout,
            )

    def _enqueue(self, conversation_id: str, job: Job) -> None:
        """Run ``job`` after every job queued before it for the same conversation."""
        queue = self._queues.get(conversation_id)
        if queue is not None:
            queue.append(job)
            return
        queue = deque([job])
        self._queues[conversation_id] = queue
        self.spawn(self._drain(conversation_id, queue))

    async def _drain(self, conversation_id: str, queue: Deque[Job]) -> None:
        try:
            while queue:
                try:
                    await queue[0]()
                except Exception:
                    logger.exception("Conversation %s: a queued job failed", conversation_id)
                queue.popleft()
        finally:
            if self._queues.get(conversation_id) is queue:
                del self._queues[conversation_id]

    async def aclose(self, grace: float) -> None:
        """Let queued turns finish (for up to ``grace`` seconds), then close the tickets."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await self.tickets.close()
