"""Screening (issue 12): either signature header on either platform, and replay
protection by the envelope's timestamp (``max_event_age``)."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional

import pytest

from rasa_sparkcentral import screening
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import HOOTSUITE_SIGNATURE_HEADER, SIGNATURE_HEADER
from rasa_sparkcentral.ratelog import BoundedLog
from rasa_sparkcentral.screening import screen
from rasa_sparkcentral.signature import sign_with_secret, signature_of

SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#: 2022-04-28T09:43:26.635984618Z in seconds since the epoch.
SENT_AT = 1651139006.635984618
NANOSECONDS = "2022-04-28T09:43:26.635984618Z"


def settings(platform: str = "sparkcentral", **extra: Any) -> Settings:
    return Settings.from_credentials(
        {"shared_secret": SECRET, "platform": platform, "reply_mode": "webhook", **extra}
    )


def body(
    timestamp: Optional[Any] = NANOSECONDS, event_type: str = "INBOUND_MESSAGE_RECEIVED"
) -> bytes:
    envelope: Dict[str, Any] = {
        "idempotencyKey": "k-1",
        "version": 1,
        "type": event_type,
        "data": {"conversationId": "0-1", "message": {"text": "hi"}},
    }
    if timestamp is not None:
        envelope["timestamp"] = timestamp
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("platform", ["sparkcentral", "hootsuite"])
@pytest.mark.parametrize("header", [SIGNATURE_HEADER, HOOTSUITE_SIGNATURE_HEADER])
def test_either_signature_header_is_accepted_on_either_platform(platform: str, header: str) -> None:
    raw = body()
    # header lookup is case-insensitive in Sanic and aiohttp; a dict stands in with the exact name
    signature = signature_of({header: sign_with_secret(SECRET, raw)})
    screened = screen(settings(platform), raw, signature, "peer", now=SENT_AT)
    assert screened.status == 200 and screened.event is not None


@pytest.mark.parametrize(
    ("offset", "status"),
    [(0.0, 200), (-299.0, 200), (299.0, 200), (-301.0, 401), (301.0, 401), (600.0, 401)],
    ids=["now", "299s-ahead", "299s-old", "301s-ahead", "301s-old", "10min-old"],
)
def test_an_event_beyond_max_event_age_either_way_is_refused(offset: float, status: int) -> None:
    raw = body()
    screened = screen(settings(), raw, sign_with_secret(SECRET, raw), "peer", now=SENT_AT + offset)
    assert screened.status == status
    assert (screened.event is None) == (status != 200)


def test_a_stale_event_is_refused_with_one_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fresh rate bound: earlier tests in this process may have used up the shared one's
    monkeypatch.setattr(screening, "rejected", BoundedLog(screening.logger))
    raw = body()
    with caplog.at_level(logging.INFO, logger="rasa_sparkcentral"):
        screened = screen(
            settings(), raw, sign_with_secret(SECRET, raw), "1.2.3.4", now=SENT_AT + 600
        )
    assert (screened.status, screened.answer) == (401, {"error": "stale event"})
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelno == logging.WARNING
    assert "600 s old" in record.getMessage() and "1.2.3.4" in record.getMessage()


def test_max_event_age_zero_turns_the_check_off() -> None:
    raw = body()
    screened = screen(
        settings(max_event_age=0),
        raw,
        sign_with_secret(SECRET, raw),
        "peer",
        now=SENT_AT + 86400 * 365,
    )
    assert screened.status == 200 and screened.event is not None


def test_max_event_age_is_settable() -> None:
    raw = body()
    signature = sign_with_secret(SECRET, raw)
    assert screen(settings(max_event_age=10), raw, signature, "p", now=SENT_AT + 11).status == 401
    assert screen(settings(max_event_age=10), raw, signature, "p", now=SENT_AT + 9).status == 200


def test_the_signature_is_checked_before_the_age() -> None:
    raw = body()
    screened = screen(settings(), raw, "0" * 64, "peer", now=SENT_AT + 600)
    assert (screened.status, screened.answer) == (401, {"error": "invalid signature"})


def test_a_stale_event_of_unknown_type_is_refused_too() -> None:
    raw = body(event_type="CONVERSATION_TRANSFERRED_TO_MARS")
    signature = sign_with_secret(SECRET, raw)
    assert screen(settings(), raw, signature, "peer", now=SENT_AT + 600).status == 401
    assert screen(settings(), raw, signature, "peer", now=SENT_AT).status == 200


def test_an_event_without_a_timestamp_is_accepted() -> None:
    """The signature covers the body, so a body without a timestamp can only come from the
    platform itself: it is let through rather than leaving the bot deaf."""
    raw = body(timestamp=None)
    screened = screen(settings(), raw, sign_with_secret(SECRET, raw), "peer", now=SENT_AT + 600)
    assert screened.status == 200 and screened.event is not None


def test_an_unreadable_timestamp_is_accepted_and_reported_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(screening, "_unreadable_timestamp_reported", False)
    raw = body(timestamp="last tuesday")
    signature = sign_with_secret(SECRET, raw)
    with caplog.at_level(logging.INFO, logger="rasa_sparkcentral"):
        first = screen(settings(), raw, signature, "peer", now=SENT_AT)
        second = screen(settings(), raw, signature, "peer", now=SENT_AT)
    assert (first.status, second.status) == (200, 200)
    assert first.event is not None
    warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and "last tuesday" in warnings[0].getMessage()
