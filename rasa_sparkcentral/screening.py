"""The checks every webhook passes before anything else: size, signature, shape, age.

Pure, shared by the Sanic route and the ``webhook_port`` listener's process, as are the
answers a webhook gets when it passed them but cannot be taken now.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import SIGNATURE_HEADERS, Event, ProtocolError, parse_event
from rasa_sparkcentral.ratelog import BoundedLog
from rasa_sparkcentral.signature import verify

logger = logging.getLogger(__name__)

#: An HTTP status and its JSON answer.
Answer = Tuple[int, Dict[str, Any]]
#: The event could not be recorded: Sparkcentral retries it later.
UNAVAILABLE: Answer = (503, {"error": "the event could not be recorded; retry later"})
#: The bot is shutting down: Sparkcentral retries it later (with the next instance).
STOPPING: Answer = (503, {"error": "the bot is stopping; retry later"})

#: Rejections can come in floods: logged at a bounded rate.
rejected = BoundedLog(logger)

#: Whether an unreadable envelope timestamp was already reported (once per process).
_unreadable_timestamp_reported = False


@dataclass
class Screened:
    """The HTTP answer for a webhook, and the event to handle (None: nothing to do)."""

    status: int
    answer: Dict[str, Any] = field(default_factory=dict)
    event: Optional[Event] = None


def screen(
    settings: Settings,
    body: bytes,
    signature: Optional[str],
    peer: Any,
    now: Optional[float] = None,
) -> Screened:
    """413 too large, 401 bad signature, 400 malformed, 401 too old or too far in the
    future, 200 ignored unknown type, or 200 with the event to handle.

    ``signature`` is the value of either signature header (``signature_of(headers)``);
    ``now`` (seconds since the epoch) is for tests."""
    if len(body) > settings.max_body_bytes:
        rejected.warning(
            "Rejected a webhook of %d bytes (limit %d)", len(body), settings.max_body_bytes
        )
        return Screened(413, {"error": "request body too large"})
    if not verify(settings.shared_secret, body, signature):
        rejected.warning(
            "Rejected a webhook from %s: missing or invalid signature (%s); if every "
            "webhook is refused, check shared_secret in credentials.yml against the "
            "platform's virtual agent settings",
            peer,
            " or ".join(SIGNATURE_HEADERS),
        )
        return Screened(401, {"error": "invalid signature"})
    try:
        event = parse_event(body)
    except ProtocolError as e:
        rejected.warning("Rejected a webhook: %s", e)
        return Screened(400, {"error": str(e)})
    age = event_age(settings, event, time.time() if now is None else now)
    if age is not None:
        rejected.warning(
            "Rejected a webhook from %s: its timestamp is %.0f s %s (limit %.0f s; "
            "a replayed delivery?)",
            peer,
            abs(age),
            "old" if age > 0 else "in the future",
            settings.max_event_age,
        )
        return Screened(401, {"error": "stale event"})
    if not event.known:
        rejected.info("Ignored a webhook event of unknown type %r", event.type[:80])
        return Screened(200)
    return Screened(200, event=event)


def event_age(settings: Settings, event: Event, now: float) -> Optional[float]:
    """How old ``event`` is (seconds; negative: from the future) when that is beyond
    ``max_event_age``; None when it is fresh enough or cannot be judged.

    Both platforms put a ``timestamp`` on every event. An event without one, or with one
    we cannot read, is let through: the signature covers the whole body, so such a body
    can only come from the platform itself, and refusing it would leave the bot deaf.
    An unreadable timestamp is reported once per process, so an operator knows the
    replay check is not working.
    """
    if settings.max_event_age <= 0 or event.timestamp is None:
        return None
    sent_at = event.sent_at
    if sent_at is None:
        _report_unreadable_timestamp(event.timestamp)
        return None
    age = now - sent_at
    return age if abs(age) > settings.max_event_age else None


def _report_unreadable_timestamp(timestamp: str) -> None:
    global _unreadable_timestamp_reported
    if not _unreadable_timestamp_reported:
        _unreadable_timestamp_reported = True
        logger.warning(
            "A webhook carries a timestamp that cannot be read (%r): events like it are "
            "accepted without the replay check (reported once)",
            timestamp[:40],
        )
