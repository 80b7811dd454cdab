"""What a replayed journal entry needs: whether Rasa handled it already, and a sink that
keeps a turn's replies for the outbox.

A turn's ``UserUttered`` carries the webhook's idempotencyKey as ``message_id`` (an
assignment event's messages add ``:restart`` / ``:start``), and Rasa saves the tracker
once the turn's actions ran: an entry found there is finished, not run again.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Dict

from rasa.shared.core.events import UserUttered

from rasa_sparkcentral.journal import JournalUnavailable
from rasa_sparkcentral.output import RestSink

logger = logging.getLogger(__name__)

#: (conversation id, body, source key) → the body is in the outbox.
Enqueue = Callable[[str, Dict[str, Any], str], Awaitable[None]]


async def already_handled(agent: Any, conversation_id: str, idempotency_key: str) -> bool:
    """True when the conversation's tracker holds a message with this key. Raises
    JournalUnavailable when the tracker store cannot be read (try again later rather
    than run a turn twice)."""
    tracker_store = getattr(agent, "tracker_store", None)
    if tracker_store is None:
        return False
    try:
        tracker = await tracker_store.retrieve(conversation_id)
    except Exception as e:
        raise JournalUnavailable(f"tracker store: {type(e).__name__}: {e}") from e
    if tracker is None:
        return False
    prefix = f"{idempotency_key}:"
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            message_id = event.message_id or ""
            if message_id == idempotency_key or message_id.startswith(prefix):
                return True
    return False


class OutboxSink:
    """Puts each of a turn's conversation actions into the outbox as Rasa produces it,
    so that they are durable before Rasa saves the tracker (after which a replay would
    skip the turn). The n-th action of a turn goes in under the source key
    ``<idempotencyKey>#<n>``: a turn run again after a crash puts nothing twice."""

    def __init__(self, rest: RestSink, key: str, enqueue: Enqueue) -> None:
        self._rest = rest
        self._key = key
        self._enqueue = enqueue
        self.count = 0

    @property
    def rest(self) -> RestSink:
        return self._rest

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
        if self._rest.gone:
            return
        body = self._rest.for_rest(recipient_id, body)  # as the REST API takes it
        if not body:
            return
        self.count += 1
        await self._enqueue(recipient_id, body, f"{self._key}#{self.count}")
