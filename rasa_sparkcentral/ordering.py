"""Per-conversation order by leases (``Ordering``), and the turn slots.

The accepted events wait in a ``Backlog`` (the journal). ``wake(conversation_id)`` starts
a drain for the conversation unless one runs here already: the drain takes the
conversation's lease (None: another holder, here or on another instance, runs it) and
hands its unfinished entries, oldest first, to ``handle`` one at a time. ``handle``
finishes each entry (or leaves it for a later replay); when none is left the lease is
released and the backlog looked at once more, so that an entry recorded during the
release is not stranded. A holder that dies leaves its lease to run out; the periodic
sweep (``conversations_with_work``) then wakes the conversation on a live instance.

Turn slots bound the turns Rasa computes at once (NLU and policies run on the event loop
that also answers webhooks). A turn still running after ``slot_hold`` seconds is waiting
on something else (the action server, the platform): it gives its slot back, so a slow
conversation never holds a slot that an unrelated conversation needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Dict,
    List,
    Optional,
    Protocol,
    Set,
)

from rasa_sparkcentral.journal import Entry, JournalUnavailable, Lease

logger = logging.getLogger(__name__)

#: A turn running longer than this (seconds) gives its turn slot back.
SLOT_HOLD = 1.0
#: After the backlog could not be read, the drain tries again after this many seconds.
RETRY_READ = 1.0

Handle = Callable[[Entry], Awaitable[None]]


class Backlog(Protocol):
    """What ``Ordering`` needs of the journal."""

    async def acquire(self, conversation_id: str) -> Optional[Lease]: ...

    async def release(self, lease: Lease) -> None: ...

    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]: ...


class Ordering:
    """Runs each conversation's backlog in order, on the instance holding its lease."""

    def __init__(
        self,
        backlog: Backlog,
        handle: Handle,
        *,
        max_concurrent_turns: int = 8,
        slot_hold: float = SLOT_HOLD,
    ) -> None:
        self.backlog = backlog
        self.handle = handle
        self.max_concurrent_turns = max_concurrent_turns
        self.slot_hold = slot_hold
        self._drains: Dict[str, asyncio.Task[None]] = {}
        self._again: Set[str] = set()
        self._tasks: Set[asyncio.Task[None]] = set()
        self._slots: Optional[asyncio.Semaphore] = None
        self.closing = False

    @property
    def pending_conversations(self) -> int:
        """Conversations with a drain running here."""
        return len(self._drains)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task that ``aclose`` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def wake(self, conversation_id: str) -> None:
        """The conversation may have new entries: drain it (here, if its lease is free)."""
        if self.closing:
            return
        if conversation_id in self._drains:
            self._again.add(conversation_id)
            return
        self._drains[conversation_id] = self.spawn(self._drain(conversation_id))

    async def _drain(self, conversation_id: str) -> None:
        try:
            while not self.closing:
                self._again.discard(conversation_id)
                lease = await self._acquire(conversation_id)
                if lease is None:
                    return
                try:
                    await self._run_backlog(conversation_id, lease)
                finally:
                    await self._release(lease)
                # anything recorded while we released? (its waker saw our drain running)
                if conversation_id not in self._again and not await self._has_work(conversation_id):
                    return
        finally:
            del self._drains[conversation_id]

    async def _run_backlog(self, conversation_id: str, lease: Lease) -> None:
        while not self.closing and not lease.lost:
            try:
                entries = await self.backlog.unfinished(conversation_id)
            except JournalUnavailable:
                await asyncio.sleep(RETRY_READ)
                continue
            if not entries:
                return
            for entry in entries:
                if self.closing or lease.lost:
                    return
                try:
                    await self.handle(entry)
                except JournalUnavailable:
                    # not finished: it stays in the journal, read again shortly
                    await asyncio.sleep(RETRY_READ)
                    break
                except Exception:
                    logger.exception(
                        "Conversation %s: handling %s failed", conversation_id, entry.key
                    )
                    await asyncio.sleep(RETRY_READ)
                    break

    async def _acquire(self, conversation_id: str) -> Optional[Lease]:
        try:
            return await self.backlog.acquire(conversation_id)
        except JournalUnavailable:
            return None  # the sweep wakes it again

    async def _release(self, lease: Lease) -> None:
        try:
            await self.backlog.release(lease)
        except JournalUnavailable:
            pass  # it runs out after claim_after

    async def _has_work(self, conversation_id: str) -> bool:
        try:
            return bool(await self.backlog.unfinished(conversation_id, limit=1))
        except JournalUnavailable:
            return False

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a turn slot (for at most ``slot_hold`` seconds, see ``run_in_slot``)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_turns)
        async with self._slots:
            yield

    async def run_in_slot(self, work: Awaitable[None]) -> None:
        """Run ``work`` holding a turn slot until it ends or ``slot_hold`` passes; a
        longer turn is waiting on I/O and finishes without the slot."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent_turns)
        await self._slots.acquire()
        released = False
        try:
            task = asyncio.ensure_future(work)
            done, _ = await asyncio.wait([task], timeout=self.slot_hold)
            if not done:
                self._slots.release()
                released = True
            await task
        finally:
            if not released:
                self._slots.release()

    async def aclose(self, grace: float) -> None:
        """Stop starting entries; let those running finish for up to ``grace`` seconds.
        What is left stays in the backlog for the next start (or another instance)."""
        self.closing = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
