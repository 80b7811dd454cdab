"""Parsing Sparkcentral's webhook events and building the bodies we send back.

Pure functions and plain data: no I/O, no Rasa. Everything here is shared by the
channel and by anything that needs to understand the Virtual Agent protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

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
#: Fields only Hootsuite's successor inbox documents; sent only when a setting allows.
SUCCESSOR_FIELDS = ("sendMessages", "setContactAttributes", "indicateTyping")


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

    @property
    def attachment(self) -> Any:
        """Whatever attachment description the inbound message carries (open shape)."""
        message = self.data.get("message")
        if isinstance(message, dict):
            return message.get("attachment") or message.get("attachments")
        return None


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

    @classmethod
    def from_event(cls, event: Event) -> ChannelDetails:
        data = event.data
        raw_channel = data.get("channel")
        channel: Dict[str, Any] = raw_channel if isinstance(raw_channel, dict) else {}
        medium = data.get("medium")
        medium_id = medium.get("id") if isinstance(medium, dict) else medium
        profile = data.get("contactProfile")
        attributes = data.get("contactAttributes")
        return cls(
            conversation_id=event.conversation_id,
            channel_id=_str_or_none(channel.get("id")),
            channel_name=_str_or_none(channel.get("name")),
            medium=_str_or_none(medium_id),
            # every profile field passes through, known or not (e.g. profileUrl)
            contact_profile=dict(profile) if isinstance(profile, dict) else {},
            contact_attributes=[dict(a) for a in attributes if isinstance(a, dict)]
            if isinstance(attributes, list)
            else [],
        )

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ChannelDetails:
        return cls(
            conversation_id=str(payload.get("conversationId", "")),
            channel_id=_str_or_none(payload.get("channelId")),
            channel_name=_str_or_none(payload.get("channelName")),
            medium=_str_or_none(payload.get("medium")),
            contact_profile=dict(payload.get("contactProfile") or {}),
            contact_attributes=list(payload.get("contactAttributes") or []),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "conversationId": self.conversation_id,
            "channelId": self.channel_id,
            "channelName": self.channel_name,
            "medium": self.medium,
            "contactProfile": dict(self.contact_profile),
            "contactAttributes": [dict(a) for a in self.contact_attributes],
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
    topics = body.get("applyTopics")
    if topics is not None:
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise ValueError("applyTopics must be a list of topic names")
        if topics:
            body["applyTopics"] = topics
        else:
            del body["applyTopics"]
    return body
