"""What a replayed journal entry needs: whether Rasa handled it already, and a sink that
keeps a turn's replies for the outbox.

A turn's ``UserUttered`` carries the webhook's idempotencyKey as ``message_id`` (an
assignment event's messages add ``:restart`` / ``:start``), and Rasa saves the tracker
once the turn's actions ran: an entry found there is finished, not run again.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from rasa.shared.core.events import UserUttered

from rasa_sparkcentral.journal import JournalUnavailable
from rasa_sparkcentral.output import RestSink

logger = logging.getLogger(__name__)


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
    """Keeps a turn's conversation actions, in order, for the outbox."""

    def __init__(self, rest: RestSink) -> None:
        self._rest = rest
        self.bodies: List[Dict[str, Any]] = []

    @property
    def rest(self) -> RestSink:
        return self._rest

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
        if not self._rest.gone:
            self.bodies.append(body)
