"""The contact side: ids, realistic profiles and signed webhook envelopes."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

from rasa_sparkcentral.signature import sign_with_secret

# Restated on purpose (not imported from rasa_sparkcentral.protocol): the emulator plays
# Sparkcentral, so the event names it sends must not follow a typo in the channel's copy.
EVENT_CONVERSATION_STARTED = "CONVERSATION_STARTED"
EVENT_CONVERSATION_DELEGATED = "CONVERSATION_DELEGATED"
EVENT_INBOUND_MESSAGE_RECEIVED = "INBOUND_MESSAGE_RECEIVED"
ASSIGNMENT_EVENTS = (EVENT_CONVERSATION_STARTED, EVENT_CONVERSATION_DELEGATED)

DEFAULT_CHANNEL_ID = "0-01c6421333d-000-4a29abb0"
DEFAULT_CHANNEL_NAME = "Emulator Channel"


def new_sparkcentral_id() -> str:
    """An id shaped like Sparkcentral's: ``0-01e67a8c216-000-8c9ea98e``."""
    millis = int(time.time() * 1000) & 0xFFFFFFFFFFF
    return f"0-{millis:011x}-000-{secrets.token_hex(4)}"


def new_conversation_id() -> str:
    return new_sparkcentral_id()


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def timestamp_now() -> str:
    """``2019-02-20T10:28:57.229144Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_contact_profile(
    name: str = "Johan", *, vip: bool = False, contact_id: Optional[str] = None
) -> Dict[str, Any]:
    """A realistic ``contactProfile``."""
    cid = contact_id or new_sparkcentral_id()
    return {
        "id": cid,
        "mediumContactProfileId": str(secrets.randbelow(10**15) + 10**15),
        "primaryIdentifier": name,
        "secondaryIdentifier": "",
        "pictureUrl": f"https://emulator.sparkcentral.invalid/avatars/{cid}.png",
        "vip": vip,
    }


def default_contact_attributes(
    medium: str, language: Optional[str] = "en-GB"
) -> List[Dict[str, Any]]:
    """The attributes a medium reports about the contact (a browser language for web chat)."""
    if not language:
        return []
    browser = medium == "smooch-rtm"
    attribute = "smooch-rtm-browser-language" if browser else f"{medium}-language"
    return [{"attribute": attribute, "value": language, "source": "MEDIUM"}]


def default_channel() -> Dict[str, Any]:
    return {"id": DEFAULT_CHANNEL_ID, "name": DEFAULT_CHANNEL_NAME}


def build_envelope(
    event_type: str,
    data: Mapping[str, Any],
    *,
    idempotency_key: Optional[str] = None,
    timestamp: Optional[str] = None,
) -> Dict[str, Any]:
    """``{timestamp, idempotencyKey, version: 1, type, data}`` in Sparkcentral's key order."""
    return {
        "timestamp": timestamp or timestamp_now(),
        "idempotencyKey": idempotency_key or new_idempotency_key(),
        "version": 1,
        "type": event_type,
        "data": dict(data),
    }


def encode_envelope(envelope: Mapping[str, Any], *, pretty: bool = False) -> bytes:
    """Compact JSON, UTF-8, as Sparkcentral sends it; ``pretty``: indented, with spaces
    after the separators (the signature covers the white space as sent)."""
    if pretty:
        return json.dumps(envelope, indent=2, ensure_ascii=False).encode("utf-8")
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def new_message_id() -> str:
    """A ``message.messageId`` for a contact message."""
    return new_sparkcentral_id()


def signed_event(
    shared_secret: str,
    event_type: str,
    data: Mapping[str, Any],
    *,
    idempotency_key: Optional[str] = None,
) -> Tuple[bytes, str, str]:
    """Build, encode and sign an event: ``(body, signature_hex, idempotency_key)``."""
    envelope = build_envelope(event_type, data, idempotency_key=idempotency_key)
    body = encode_envelope(envelope)
    return body, sign_with_secret(shared_secret, body), str(envelope["idempotencyKey"])
