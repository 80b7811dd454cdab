"""Delivers the durable outbox (``ReplySender``): one sender per conversation, outside the
turn slots, each reply tried once per attempt and retried with ``next_retry_delay`` until
its deadline (the platform's reply timeout).

While the platform is down the log gets one WARNING when it goes down and one INFO when
it comes back (with how many attempts failed meanwhile), not a line per retry; a reply
given up on is named by conversation, idempotencyKey and length, never its text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Dict, Optional, Set

from rasa_sparkcentral.client import Outcome, SparkcentralClient
from rasa_sparkcentral.journal import JournalUnavailable
from rasa_sparkcentral.outbox import Outbox, OutboxItem, next_retry_delay

logger = logging.getLogger(__name__)

#: After the outbox could not be read, try again after this many seconds.
RETRY_READ = 1.0


class PlatformHealth:
    """One line when the platform starts failing, one when it answers again."""

    def __init__(self) -> None:
        self.down_since: Optional[float] = None
        self.failed_attempts = 0

    def failed(self, reason: str) -> None:
        self.failed_attempts += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            logger.warning(
                "Sparkcentral unavailable (%s): replies wait in the outbox and are retried",
                reason,
            )

    def succeeded(self) -> None:
        if self.down_since is not None:
            logger.info(
                "Sparkcentral available again after %.1f s (%d attempts failed meanwhile)",
                time.monotonic() - self.down_since,
                self.failed_attempts,
            )
            self.down_since = None
            self.failed_attempts = 0


class ReplySender:
    """Sends each conversation's outbox in order, on the instance holding its lease."""

    def __init__(
        self,
        outbox: Outbox,
        client: SparkcentralClient,
        *,
        backoff_base: float = 0.25,
        backoff_max: float = 10.0,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.health = PlatformHealth()
        #: set (and replaced) when the platform answers again or the sender stops: the
        #: senders waiting out a backoff try at once
        self._kick = asyncio.Event()
        self._senders: Dict[str, asyncio.Task[None]] = {}
        self._again: Set[str] = set()
        self.closing = False

    @property
    def active(self) -> int:
        return len(self._senders)

    def wake(self, conversation_id: str) -> None:
        if self.closing:
            return
        if conversation_id in self._senders:
            self._again.add(conversation_id)
            return
        task = asyncio.get_running_loop().create_task(self._send_all(conversation_id))
        self._senders[conversation_id] = task

    async def _send_all(self, conversation_id: str) -> None:
        try:
            while not self.closing:
                self._again.discard(conversation_id)
                try:
                    lease = await self.outbox.acquire(conversation_id)
                except JournalUnavailable:
                    return  # the sweep wakes it again
                if lease is None:
                    return
                try:
                    while not self.closing and not lease.lost:
                        try:
                            item = await self.outbox.peek(conversation_id)
                        except JournalUnavailable:
                            await asyncio.sleep(RETRY_READ)
                            continue
                        if item is None:
                            break
                        try:
                            await self._send(item)
                        except JournalUnavailable:  # not sent: tried again from the outbox
                            await asyncio.sleep(RETRY_READ)
                finally:
                    try:
                        await self.outbox.release(lease)
                    except JournalUnavailable:
                        pass
                if conversation_id not in self._again:
                    try:
                        if await self.outbox.peek(conversation_id) is None:
                            return
                    except JournalUnavailable:
                        return
        finally:
            del self._senders[conversation_id]

    async def _send(self, item: OutboxItem) -> None:
        """One attempt; on a retryable failure, wait (or give up at the deadline)."""
        try:
            body: Dict[str, Any] = json.loads(item.body)
        except ValueError:
            logger.error("Conversation %s: an unreadable outbox item dropped", item.conversation_id)
            await self.outbox.give_up(item)
            return
        attempt = await self.client.attempt(item.conversation_id, body)
        if attempt.outcome is not None:
            if self.health.down_since is not None:
                self._wake_waiting()
            self.health.succeeded()
            if attempt.outcome is Outcome.FAILED:
                logger.error(
                    "Conversation %s: a reply to %s (%d bytes) was rejected (%s); not retried",
                    item.conversation_id,
                    item.source_key,
                    len(item.body),
                    attempt.reason,
                )
            await self._done(item)
            return
        self.health.failed(attempt.reason)
        item = await self.outbox.attempted(item)
        delay = next_retry_delay(
            item.attempts,
            now=time.time(),
            deadline=item.deadline,
            retry_after=attempt.retry_after,
            base=self.backoff_base,
            cap=self.backoff_max,
        )
        if delay is None:
            logger.error(
                "Conversation %s: gave up on a reply to %s (%d bytes) after %d attempts "
                "(reply deadline passed; last: %s)",
                item.conversation_id,
                item.source_key,
                len(item.body),
                item.attempts,
                attempt.reason,
            )
            await self.outbox.give_up(item)
            return
        kick = self._kick
        try:
            await asyncio.wait_for(kick.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _done(self, item: OutboxItem) -> None:
        """The platform has the reply: mark it sent, waiting out an outage of the outbox's
        store (left unmarked, it would be sent again once the store is back).

        The wait has no deadline of its own, on purpose: giving up would send the reply
        twice. It ends when the store answers or when ``aclose`` cancels the sender after
        its grace; then the reply stays unmarked and may go out again after a restart,
        the one duplicate this cannot rule out. The store's outage is logged by the store."""
        while True:
            try:
                await self.outbox.done(item)
                return
            except JournalUnavailable:
                await asyncio.sleep(RETRY_READ)

    def _wake_waiting(self) -> None:
        self._kick.set()
        self._kick = asyncio.Event()

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop: sends on the wire finish (for up to ``grace`` seconds, so that none is
        cut off after the platform took it); unsent replies stay in the outbox."""
        self.closing = True
        self._wake_waiting()
        tasks = list(self._senders.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
