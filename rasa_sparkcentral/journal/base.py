"""What every journal backend promises: the types the channel sees and the interface.

A journal is the durable record of accepted webhook events. ``record`` returns only once
the event is stored (so the webhook may be answered 200), ``unfinished`` hands a
conversation's open events back in acceptance order, ``finish`` marks one done (its body
dropped, its key kept for ``dedup_ttl`` to recognise repeats). Per-conversation order
across processes comes from leases (see ``leases``): whoever holds a conversation's lease
runs its unfinished events, one after the other.
"""

from __future__ import annotations

import abc
import enum
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Protocol, Tuple, TypeVar

from rasa_sparkcentral.journal.leases import Lease, Leases

logger = logging.getLogger(__name__)

#: A dead holder's lease runs out after this many seconds; then any instance may take over.
CLAIM_AFTER = 15.0
#: How long a finished event's key still marks a redelivery as a repeat.
DEDUP_TTL = 24 * 3600.0


class JournalUnavailable(RuntimeError):
    """The journal cannot record or read right now (the channel answers 503)."""


class Accepted(enum.Enum):
    NEW = "new"  # recorded now: run it
    PENDING = "pending"  # recorded before and not finished: it will run (answer 200)
    DONE = "done"  # finished before: a repeat (answer 200, do nothing)


@dataclass(frozen=True)
class Entry:
    """One accepted, unfinished event."""

    key: str
    conversation_id: str
    body: bytes
    #: Backend order token (SQLite row number, Redis stream id): increasing per conversation.
    position: str
    #: The instance token (``Instance.token``) of the process that accepted it.
    accepted_by: str
    accepted_at: float


class Queued(Protocol):
    """What ``by_conversation`` keeps: a journal entry, an outbox item."""

    @property
    def conversation_id(self) -> str: ...

    @property
    def position(self) -> str: ...


Q = TypeVar("Q", bound=Queued)


def by_conversation(
    items: Iterable[Q], into: Optional[Dict[str, List[Q]]] = None
) -> Dict[str, List[Q]]:
    """``items`` added to their conversation's list in ``into`` (a new dict by default),
    in the order given, each position once (a reload after a worker died may bring back
    an item the in-memory copy already holds)."""
    queues: Dict[str, List[Q]] = {} if into is None else into
    for item in items:
        queue = queues.setdefault(item.conversation_id, [])
        if all(queued.position != item.position for queued in queue):
            queue.append(item)
    return queues


def replace_queued(queues: Dict[str, List[Q]], item: Q, new: Optional[Q] = None) -> None:
    """Put ``new`` in ``item``'s place in its conversation's list (None: remove it); a
    conversation left with nothing is dropped. The list is replaced, not changed in place
    (another thread may be reading it)."""
    kept: List[Q] = []
    for queued in queues.get(item.conversation_id, []):
        if queued.position != item.position:
            kept.append(queued)
        elif new is not None:
            kept.append(new)
    if kept:
        queues[item.conversation_id] = kept
    else:
        queues.pop(item.conversation_id, None)


@dataclass(frozen=True)
class JournalCounts:
    """For the health endpoint. ``pending`` is what the store holds (all processes);
    the rest count since this process started."""

    backend: str
    accepted: int
    repeats: int
    finished: int
    replayed: int
    failed: int
    unavailable: int
    pending: int


@dataclass(frozen=True)
class Instance:
    """Who this process is. ``name`` is stable across restarts (hostname:port by default),
    ``nonce`` is new per process. A lease held under our name with another nonce is an
    orphan of our previous life and is released on start. Two live processes must never
    share a name (hostname:port cannot be bound twice on one host)."""

    name: str
    nonce: str

    @property
    def token(self) -> str:
        return f"{self.name}|{self.nonce}"

    @classmethod
    def create(cls, name: Optional[str] = None, port: Optional[int] = None) -> Instance:
        if not name:
            name = f"{socket.gethostname()}:{port if port is not None else os.getpid()}"
        if "|" in name:
            raise ValueError("an instance name cannot contain '|'")
        return cls(name=name, nonce=uuid.uuid4().hex[:12])


class OutageLog:
    """One WARNING when the store becomes unavailable, one INFO when it is back (with the
    number of refused calls), instead of a traceback per request."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._down_since: Optional[float] = None
        self._refused = 0

    def failed(self, error: BaseException) -> None:
        self._refused += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning("%s unavailable: %s: %s", self._what, type(error).__name__, error)

    def succeeded(self) -> None:
        if self._down_since is not None:
            logger.info(
                "%s available again after %.1f s (%d calls refused)",
                self._what,
                time.monotonic() - self._down_since,
                self._refused,
            )
            self._down_since = None
            self._refused = 0


class Journal(abc.ABC):
    """The durable record of accepted webhook events; see the module docstring."""

    backend: str = ""

    def __init__(self, instance: Instance, leases: Leases, *, dedup_ttl: float) -> None:
        self.instance = instance
        self.leases = leases
        self.dedup_ttl = dedup_ttl
        self._accepted = 0
        self._repeats = 0
        self._finished = 0
        self._replayed = 0
        self._failed = 0
        self._unavailable = 0

    async def start(self) -> int:
        """Open the store and release this instance's orphaned leases (returns how many)."""
        return await self.leases.release_orphans()

    async def record(self, key: str, conversation_id: str, body: bytes) -> Accepted:
        """Store the event durably (before returning NEW) unless its key is known.
        Raises JournalUnavailable when it cannot."""
        outcome, _ = await self.record_entry(key, conversation_id, body)
        return outcome

    async def record_entry(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]:
        """``record``, and the entry it stored where this backend keeps its unfinished
        entries in memory (SQLite's; None for Redis, read from Redis): what the journal
        of the process that runs the turns ``adopt``s when another process recorded it
        (the ``webhook_port`` listener)."""
        try:
            outcome, entry = await self._record(key, conversation_id, body)
        except JournalUnavailable:
            self.count_unavailable()
            raise
        self._count_record(outcome)
        return outcome, entry

    def adopt(self, outcome: Accepted, entry: Optional[Entry]) -> None:
        """An event another process recorded in this journal's store for this one (its
        ``record_entry``): counted, and ``entry`` kept as one this journal recorded."""
        if entry is not None:
            self._keep(entry)
        self._count_record(outcome)

    def count_unavailable(self) -> None:
        """A record another process could not make (for the health counts)."""
        self._unavailable += 1

    def _count_record(self, outcome: Accepted) -> None:
        if outcome is Accepted.NEW:
            self._accepted += 1
        else:
            self._repeats += 1

    @abc.abstractmethod
    def _keep(self, entry: Entry) -> None:
        """A new entry for the in-memory copy of the backends that keep one."""

    @abc.abstractmethod
    async def _record(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]: ...

    @abc.abstractmethod
    async def unfinished(self, conversation_id: str, limit: int = 100) -> List[Entry]:
        """The conversation's unfinished events, oldest first."""

    @abc.abstractmethod
    async def finish(self, entry: Entry, *, failed: bool = False) -> None:
        """The event's turn is over (``failed``: it raised and will not be retried).
        Its body is dropped; its key stays a repeat for ``dedup_ttl``. Idempotent."""

    @abc.abstractmethod
    async def conversations_with_work(self) -> List[str]:
        """Conversations with unfinished events (recovery on start, periodic sweep)."""

    @abc.abstractmethod
    async def pending(self) -> int:
        """Unfinished events in the store."""

    async def compact(self) -> int:
        """Forget finished keys older than ``dedup_ttl``; returns how many (Redis expires
        them by itself)."""
        return 0

    async def acquire(self, conversation_id: str) -> Optional[Lease]:
        """The conversation's lease, renewed in the background until released; None
        while another holder (here or on another instance) has it."""
        return await self.leases.acquire(conversation_id)

    async def release(self, lease: Lease) -> None:
        await self.leases.release(lease)

    async def counts(self) -> JournalCounts:
        try:
            pending = await self.pending()
        except JournalUnavailable:
            pending = -1
        return JournalCounts(
            backend=self.backend,
            accepted=self._accepted,
            repeats=self._repeats,
            finished=self._finished,
            replayed=self._replayed,
            failed=self._failed,
            unavailable=self._unavailable,
            pending=pending,
        )

    async def close(self) -> None:
        await self.leases.close()

    # bookkeeping shared by the backends
    def _count_finish(self, entry: Entry, failed: bool) -> None:
        self._finished += 1
        if failed:
            self._failed += 1
        if entry.accepted_by != self.instance.token:
            self._replayed += 1
