"""The checks every webhook passes before anything else: size, signature, shape.

Pure and thread-safe, shared by the Sanic route and the webhook thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import SIGNATURE_HEADER, Event, ProtocolError, parse_event
from rasa_sparkcentral.ratelog import BoundedLog
from rasa_sparkcentral.signature import verify

logger = logging.getLogger(__name__)
#: Rejections can come in floods: logged at a bounded rate.
rejected = BoundedLog(logger)


@dataclass
class Screened:
    """The HTTP answer for a webhook, and the event to handle (None: nothing to do)."""

    status: int
    answer: Dict[str, Any] = field(default_factory=dict)
    event: Optional[Event] = None


def screen(settings: Settings, body: bytes, signature: Optional[str], peer: Any) -> Screened:
    """413 too large, 401 bad signature, 400 malformed, 200 ignored unknown type, or 200
    with the event to handle."""
    if len(body) > settings.max_body_bytes:
        rejected.warning(
            "Rejected a webhook of %d bytes (limit %d)", len(body), settings.max_body_bytes
        )
        return Screened(413, {"error": "request body too large"})
    if not verify(settings.shared_secret, body, signature):
        rejected.warning(
            "Rejected a webhook from %s: missing or invalid %s", peer, SIGNATURE_HEADER
        )
        return Screened(401, {"error": "invalid signature"})
    try:
        event = parse_event(body)
    except ProtocolError as e:
        rejected.warning("Rejected a webhook: %s", e)
        return Screened(400, {"error": str(e)})
    if not event.known:
        rejected.info("Ignored a webhook event of unknown type %r", event.type[:80])
        return Screened(200)
    return Screened(200, event=event)
