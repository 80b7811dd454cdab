"""The emulator's event side: who is told when something happens, and who waits for it.

Every part of the emulator publishes here (a served call, a transcript line, a webhook
result, a token); ``add_listener`` gets each ``EmulatorEvent`` synchronously, ``subscribe``
gives an async iterator of them (for a live view: server-sent events, a UI), and
``wait_until`` wakes on every change.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Callable, List, Optional, Set, Type

from .models import EmulatorEvent

logger = logging.getLogger(__name__)

Listener = Callable[[EmulatorEvent], None]


class EventBus:
    """Listeners, subscriptions and waiters of one emulator."""

    def __init__(self) -> None:
        self._listeners: List[Listener] = []
        self._waiters: Set[asyncio.Future[None]] = set()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event, in the order they happen."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def subscribe(self, max_pending: int = 10_000) -> Subscription:
        """``async with bus.subscribe() as events: async for event in events: ...``"""
        return Subscription(self, max_pending)

    def emit(self, event: EmulatorEvent) -> None:
        """Tell every listener (a failing listener is logged, never raised) and the waiters."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the server
                logger.exception("emulator listener failed")
        self.notify()

    def notify(self) -> None:
        """Something changed: every ``wait_until`` checks its condition again."""
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` is true (checked on every change and every 0.25 s);
        False when ``timeout`` seconds passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)
        return True


class Subscription:
    """Events as an async iterator, from the moment of subscribing until ``close()``.

    At most ``max_pending`` unread events are kept; beyond that the oldest are dropped
    and counted in ``dropped`` (a slow reader never slows the emulator down).
    """

    def __init__(self, bus: EventBus, max_pending: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Optional[EmulatorEvent]] = asyncio.Queue()
        self._max_pending = max_pending
        self.dropped = 0
        self._closed = False
        bus.add_listener(self._put)

    def _put(self, event: EmulatorEvent) -> None:
        if self._queue.qsize() >= self._max_pending:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving; a reader waiting in ``async for`` finishes."""
        if not self._closed:
            self._closed = True
            self._bus.remove_listener(self._put)
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> EmulatorEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
