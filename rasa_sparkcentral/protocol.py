"""Parsing Sparkcentral's webhook events and building the bodies we send back.

Pure functions and plain data: no I/O, no Rasa. Everything here is shared by the
channel and by anything that needs to understand the Virtual Agent protocol.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

# -- where the channel lives: the one home of every name a bot, a test or the emulator uses

#: The key of the channel in a bot's ``credentials.yml``.
CREDENTIALS_KEY = "rasa_sparkcentral.SparkcentralInput"
#: ``InputChannel.name()``: the URL prefix ``/webhooks/sparkcentral/`` and ``input_channel``.
CHANNEL_NAME = "sparkcentral"
#: Rasa serves a channel's blueprint under ``/webhooks/<name>``.
HEALTH_PATH = f"/webhooks/{CHANNEL_NAME}/"
WEBHOOK_PATH = f"/webhooks/{CHANNEL_NAME}/webhook"
#: The header classic Sparkcentral signs webhooks with.
SIGNATURE_HEADER = "X-Sparkcentral-Signature"
#: The header Hootsuite Inbox 2.0 signs them with (same HMAC-SHA256 over the raw body).
HOOTSUITE_SIGNATURE_HEADER = "X-Hootsuite-Signature"
#: Either header is accepted on either platform, looked up in this order.
SIGNATURE_HEADERS = (SIGNATURE_HEADER, HOOTSUITE_SIGNATURE_HEADER)

# -- the two platforms that speak the Virtual Agent API

SPARKCENTRAL = "sparkcentral"
HOOTSUITE = "hootsuite"


@dataclass(frozen=True)
class Platform:
    """Where one platform keeps the Virtual Agent REST API, and how it grants tokens."""

    name: str
    #: ``base_url`` per region; the first one is the default.
    base_urls: Mapping[str, str]
    token_path: str
    #: Prefix of the conversation and attachment paths.
    api_prefix: str
    #: Form fields of the token request besides any the settings add.
    token_grant: Mapping[str, str]
    signature_header: str
    #: Whether the fields only the successor inbox documents are sent by default.
    successor_fields: bool

    def conversation_path(self, quoted_conversation_id: str) -> str:
        return f"{self.api_prefix}/virtual-agent/conversations/{quoted_conversation_id}"

    def attachment_path(self, quoted_conversation_id: str, quoted_filename: str) -> str:
        return f"{self.conversation_path(quoted_conversation_id)}/attachments/{quoted_filename}"


PLATFORMS: Mapping[str, Platform] = {
    SPARKCENTRAL: Platform(
        name=SPARKCENTRAL,
        base_urls={
            "us": "https://public-api.sparkcentral.com",
            "eu": "https://public-api-eu.sparkcentral.com",
        },
        token_path="/virtual-agent/oauth2/token",
        api_prefix="",
        token_grant={"grant_type": "client_credentials", "scope": "client-read"},
        signature_header=SIGNATURE_HEADER,
        successor_fields=False,
    ),
    HOOTSUITE: Platform(
        name=HOOTSUITE,
        base_urls={"global": "https://platform.hootsuite.com"},
        token_path="/oauth2/token",
        api_prefix="/inbox/v1",
        # plus organization_id=<id> from the settings
        token_grant={"grant_type": "organization_app"},
        signature_header=HOOTSUITE_SIGNATURE_HEADER,
        successor_fields=True,
    ),
}

#: Attachments must be "fewer than 10 megabytes" (both platforms' references).
ATTACHMENT_LIMIT_BYTES = 10_000_000
#: Attachment filenames: letters, digits, ``-``, ``_`` and ``.`` only.
ATTACHMENT_FILENAME_PATTERN = r"^[A-Za-z0-9._-]+$"
#: Keys of ``setContactAttributes``.
ATTRIBUTE_KEY_PATTERN = r"^[a-zA-Z0-9_]+$"
#: The platforms' default webhook rules (Inbox 2.0 reference): answer within 10 s, an event
#: older than 5 minutes may be a replay, a contact message unanswered for 5 minutes is handed
#: over, a delegated conversation with no question within 2 minutes is handed back.
WEBHOOK_DEADLINE = 10.0
MAX_EVENT_AGE = 300.0
REPLY_TIMEOUT = 300.0
DELEGATED_QUESTION_TIMEOUT = 120.0
#: Retries of a webhook that failed or timed out, with the same idempotencyKey.
WEBHOOK_RETRIES = 3
WEBHOOK_RETRY_BACKOFF_MAX = 2.0

# -- events

CONVERSATION_STARTED = "CONVERSATION_STARTED"
CONVERSATION_DELEGATED = "CONVERSATION_DELEGATED"
INBOUND_MESSAGE_RECEIVED = "INBOUND_MESSAGE_RECEIVED"

#: Events that hand a conversation (and a fresh contact profile) to the bot.
ASSIGNMENT_EVENTS = frozenset({CONVERSATION_STARTED, CONVERSATION_DELEGATED})
KNOWN_EVENTS = ASSIGNMENT_EVENTS | {INBOUND_MESSAGE_RECEIVED}

HANDOVER = "HANDOVER"
RESOLVED = "RESOLVED"
COMPLETIONS = frozenset({HANDOVER, RESOLVED})

#: Key of our block inside ``UserMessage.metadata``.
METADATA_KEY = "sparkcentral"

#: The top-level fields a conversation action (REST body or webhook answer) may carry.
ACTION_FIELDS = ("sendMessage", "applyTopics", "complete")
#: Fields only Hootsuite's successor inbox documents; sent only when a setting allows
#: (on by default with ``platform: hootsuite``).
SUCCESSOR_FIELDS = (
    "sendMessages",
    "applyTags",
    "applyConversationNotes",
    "setContactAttributes",
    "indicateTyping",
)
TYPING_STATES = frozenset({"START", "STOP"})


class ProtocolError(ValueError):
    """The request body is not a Sparkcentral event we can act on (answer 400)."""


@dataclass(frozen=True)
class Event:
    """One webhook delivery, envelope and data."""

    type: str
    idempotency_key: Optional[str]
    timestamp: Optional[str]
    version: Any
    data: Dict[str, Any]

    @property
    def known(self) -> bool:
        return self.type in KNOWN_EVENTS

    @property
    def conversation_id(self) -> str:
        return str(self.data["conversationId"])

    @property
    def text(self) -> Optional[str]:
        """The contact's text for INBOUND_MESSAGE_RECEIVED, if any."""
        message = self.data.get("message")
        if isinstance(message, dict):
            text = message.get("text")
            if isinstance(text, str):
                return text
        return None

    def _message_field(self, name: str) -> Optional[str]:
        message = self.data.get("message")
        if isinstance(message, dict):
            value = message.get(name)
            if isinstance(value, str) and value:
                return value
        return None

    @property
    def message_id(self) -> Optional[str]:
        """``message.messageId``: the platform's id of the contact's message."""
        return self._message_field("messageId")

    @property
    def payload(self) -> Optional[str]:
        """``message.payload``: the payload of the quick reply or postback button pressed."""
        return self._message_field("payload")

    @property
    def topics(self) -> List[str]:
        """``conversationTopics``: the topics the conversation has."""
        topics = self.data.get("conversationTopics")
        if not isinstance(topics, list):
            return []
        return [t for t in topics if isinstance(t, str)]

    @property
    def trigger(self) -> Optional[Dict[str, Any]]:
        """``trigger`` (``type`` REEL/STORY/POST, ``action`` SHARE/MENTION/REPLY): what the
        message answers, when it answers a post rather than starting a private message."""
        trigger = self.data.get("trigger")
        return dict(trigger) if isinstance(trigger, dict) else None

    @property
    def language(self) -> Optional[str]:
        language = self.data.get("language")
        return language if isinstance(language, str) and language else None

    @property
    def sent_at(self) -> Optional[float]:
        """The envelope's ``timestamp`` in seconds since the epoch (None: absent or bad)."""
        return parse_timestamp(self.timestamp) if self.timestamp else None


_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def parse_timestamp(text: str) -> Optional[float]:
    """An ISO 8601 timestamp as sent by the platforms, to seconds since the epoch.

    Python's ``fromisoformat`` takes at most microseconds before 3.11 and the platforms send
    nanoseconds (``2022-04-28T09:43:26.635984618Z``); no zone means UTC.
    """
    match = _TIMESTAMP.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    seconds = moment.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


#: The longest conversationId accepted (characters).
MAX_CONVERSATION_ID = 256


def check_conversation_id(conversation_id: str) -> None:
    """A conversationId must be valid UTF-8 (no lone surrogate) and short; it ends up in
    URLs, keys and log lines."""
    if len(conversation_id) > MAX_CONVERSATION_ID:
        raise ProtocolError(f"'conversationId' is longer than {MAX_CONVERSATION_ID} characters")
    try:
        conversation_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("'conversationId' is not valid UTF-8") from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_event(body: bytes) -> Event:
    """Parse a webhook body. Unknown event types parse fine (the caller ignores them);
    known ones must carry a string conversation id."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("body is not valid JSON") from None
    except RecursionError:  # json.loads gives up on very deeply nested documents
        raise ProtocolError("body is nested too deeply") from None
    if not isinstance(payload, dict):
        raise ProtocolError("body is not a JSON object")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event has no 'type'")
    data = payload.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError("event 'data' is not an object")
    key = payload.get("idempotencyKey")
    if key is not None and not isinstance(key, str):
        raise ProtocolError("'idempotencyKey' is not a string")
    if key and (len(key) > MAX_CONVERSATION_ID or not _is_utf8(key)):
        raise ProtocolError("'idempotencyKey' is too long or not valid UTF-8")
    event = Event(
        type=event_type,
        idempotency_key=key or None,
        timestamp=payload.get("timestamp") if isinstance(payload.get("timestamp"), str) else None,
        version=payload.get("version"),
        data=data,
    )
    if event.known:
        conversation_id = data.get("conversationId")
        if not isinstance(conversation_id, str) or not conversation_id.strip():
            raise ProtocolError("event data lacks a 'conversationId'")
        check_conversation_id(conversation_id)
        if event.type == INBOUND_MESSAGE_RECEIVED:
            message = data.get("message")
            if message is not None and not isinstance(message, dict):
                raise ProtocolError("'message' is not an object")
    return event


@dataclass
class ChannelDetails:
    """What the bot may know about the conversation (Chatlayer's ``channelDetails``
    shape plus the conversation id and channel name)."""

    conversation_id: str
    channel_id: Optional[str] = None
    channel_name: Optional[str] = None
    medium: Optional[str] = None
    contact_profile: Dict[str, Any] = field(default_factory=dict)
    contact_attributes: List[Dict[str, Any]] = field(default_factory=list)
    language: Optional[str] = None

    @classmethod
    def from_event(cls, event: Event) -> ChannelDetails:
        return cls(conversation_id=event.conversation_id).refreshed(event)

    def refreshed(self, event: Event) -> ChannelDetails:
        """These details with whatever the event repeats (Inbox 2.0 sends ``channel``,
        ``contactProfile``, ``medium`` and ``language`` again with each inbound message)."""
        data = event.data
        updated = ChannelDetails(**{**self.__dict__})
        raw_channel = data.get("channel")
        if isinstance(raw_channel, dict):
            updated.channel_id = _str_or_none(raw_channel.get("id"))
            updated.channel_name = _str_or_none(raw_channel.get("name"))
        medium = data.get("medium")
        medium_id = medium.get("id") if isinstance(medium, dict) else medium
        if medium_id is not None:
            updated.medium = _str_or_none(medium_id)
        profile = data.get("contactProfile")
        if isinstance(profile, dict):
            # every profile field passes through, known or not (e.g. profileUrl)
            updated.contact_profile = dict(profile)
        attributes = data.get("contactAttributes")
        if isinstance(attributes, list):
            updated.contact_attributes = [dict(a) for a in attributes if isinstance(a, dict)]
        if event.language is not None:
            updated.language = event.language
        return updated

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ChannelDetails:
        return cls(
            conversation_id=str(payload.get("conversationId", "")),
            channel_id=_str_or_none(payload.get("channelId")),
            channel_name=_str_or_none(payload.get("channelName")),
            medium=_str_or_none(payload.get("medium")),
            contact_profile=dict(payload.get("contactProfile") or {}),
            contact_attributes=list(payload.get("contactAttributes") or []),
            language=_str_or_none(payload.get("language")),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "conversationId": self.conversation_id,
            "channelId": self.channel_id,
            "channelName": self.channel_name,
            "medium": self.medium,
            "contactProfile": dict(self.contact_profile),
            "contactAttributes": [dict(a) for a in self.contact_attributes],
            "language": self.language,
        }


def _str_or_none(value: Any) -> Optional[str]:
    if value is None:
        return None
    return str(value)


def action_body(
    *,
    text: Optional[str] = None,
    attachment: Optional[str] = None,
    topics: Optional[List[str]] = None,
    complete: Optional[str] = None,
) -> Dict[str, Any]:
    """Build a conversation action (REST body or webhook answer) with only the set fields."""
    body: Dict[str, Any] = {}
    message: Dict[str, Any] = {}
    if text is not None:
        message["text"] = text
    if attachment is not None:
        message["attachment"] = attachment
    if message:
        body["sendMessage"] = message
    if topics:
        body["applyTopics"] = list(topics)
    if complete is not None:
        if complete not in COMPLETIONS:
            raise ValueError(f"complete must be one of {sorted(COMPLETIONS)}, not {complete!r}")
        body["complete"] = complete
    return body


def action_from_custom(
    custom: Mapping[str, Any], *, allow_successor_fields: bool
) -> Dict[str, Any]:
    """Pick the protocol fields out of a bot's custom JSON payload.

    Returns an empty dict when the payload carries nothing for Sparkcentral.
    """
    allowed = ACTION_FIELDS + (SUCCESSOR_FIELDS if allow_successor_fields else ())
    body = {k: custom[k] for k in allowed if custom.get(k) is not None}
    complete = body.get("complete")
    if complete is not None and complete not in COMPLETIONS:
        raise ValueError(f"complete must be one of {sorted(COMPLETIONS)}, not {complete!r}")
    for name in ("applyTopics", "applyTags"):
        names = body.get(name)
        if names is None:
            continue
        if isinstance(names, str):
            names = [names]
        if name == "applyTags" and isinstance(names, list):
            # over REST a tag names its message: {"messageId": ..., "tag": ...}
            if not all(isinstance(t, str) or _is_message_tag(t) for t in names):
                raise ValueError("applyTags must be a list of tag names or {messageId, tag}")
        elif not isinstance(names, list) or not all(isinstance(t, str) for t in names):
            raise ValueError(f"{name} must be a list of names")
        if names:
            body[name] = list(names)
        else:
            del body[name]
    notes = body.get("applyConversationNotes")
    if notes is not None:
        if isinstance(notes, str):
            notes = [{"text": notes}]
        if not isinstance(notes, list) or not all(
            isinstance(n, dict) and isinstance(n.get("text"), str) for n in notes
        ):
            raise ValueError('applyConversationNotes must be a list of {"text": ...}')
        body["applyConversationNotes"] = [{"text": n["text"]} for n in notes]
    typing = body.get("indicateTyping")
    if typing is not None and typing not in TYPING_STATES:
        raise ValueError(f"indicateTyping must be START or STOP, not {typing!r}")
    attributes = body.get("setContactAttributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise ValueError("setContactAttributes must be an object alias → value")
        good, bad = split_contact_attributes(attributes)
        if bad:
            raise ValueError(
                "setContactAttributes keys must match "
                + ATTRIBUTE_KEY_PATTERN
                + ": "
                + ", ".join(repr(k) for k in bad)
            )
        if good:
            body["setContactAttributes"] = good
        else:
            del body["setContactAttributes"]
    return body


def _is_message_tag(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("messageId"), str)
        and isinstance(value.get("tag"), str)
    )


_ATTRIBUTE_KEY = re.compile(ATTRIBUTE_KEY_PATTERN)


def split_contact_attributes(
    attributes: Mapping[Any, Any],
) -> Tuple[Dict[str, str], List[str]]:
    """(attributes the platform accepts, as strings; keys it would refuse).

    Keys must match ``^[a-zA-Z0-9_]+$``; values are sent as text, ``None`` values dropped."""
    good: Dict[str, str] = {}
    bad: List[str] = []
    for key, value in attributes.items():
        if not isinstance(key, str) or not _ATTRIBUTE_KEY.match(key):
            bad.append(str(key))
        elif value is not None:
            good[key] = value if isinstance(value, str) else json.dumps(value)
    return good, bad
