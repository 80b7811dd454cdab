"""Records kept by the emulator: calls served, conversations, transcripts, webhook results."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from rasa_sparkcentral.protocol import (
    ATTACHMENT_LIMIT_BYTES,
    DELEGATED_QUESTION_TIMEOUT,
    PLATFORMS,
    REPLY_TIMEOUT,
    SPARKCENTRAL,
    WEBHOOK_DEADLINE,
    WEBHOOK_RETRIES,
    WEBHOOK_RETRY_BACKOFF_MAX,
    Platform,
)
from rasa_sparkcentral.signature import decode_secret

QUEUE_BOT = "bot"
QUEUE_NEW = "new"
QUEUE_RESOLVED = "resolved"

SENDER_CONTACT = "contact"
SENDER_BOT = "bot"
SENDER_AGENT = "agent"
SENDER_SYSTEM = "system"

JSONDict = Dict[str, Any]


class EmulatorSettings:
    """What the emulator is configured with; one object shared by its parts (see server.py).

    Setting ``shared_secret`` checks it and keeps its decoded key for signing.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        shared_secret: str,
        webhook_url: str,
        token_lifetime: float,
        known_topics: Optional[Iterable[str]],
        accept_extended_fields: bool,
        webhook_timeout: float = WEBHOOK_DEADLINE,
        max_calls: Optional[int] = None,
        max_attachment_size: int = ATTACHMENT_LIMIT_BYTES,
        platform: str = SPARKCENTRAL,
        organization_id: str = "emulator-org",
        reply_timeout: float = REPLY_TIMEOUT,
        delegated_question_timeout: float = DELEGATED_QUESTION_TIMEOUT,
        webhook_retries: int = WEBHOOK_RETRIES,
        webhook_retry_backoff_max: float = WEBHOOK_RETRY_BACKOFF_MAX,
        pretty_json: bool = False,
    ) -> None:
        if platform not in PLATFORMS:
            raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, not {platform!r}")
        if webhook_retries < 0:
            raise ValueError("webhook_retries must be >= 0")
        self.platform = platform
        self.organization_id = organization_id
        self.reply_timeout = reply_timeout
        self.delegated_question_timeout = delegated_question_timeout
        self.webhook_retries = webhook_retries
        self.webhook_retry_backoff_max = webhook_retry_backoff_max
        self.pretty_json = pretty_json
        self.client_id = client_id
        self.client_secret = client_secret
        self.shared_key = decode_secret(shared_secret)
        self._shared_secret = shared_secret
        self.webhook_url = webhook_url
        self.token_lifetime = token_lifetime
        self.known_topics: Optional[Set[str]] = (
            set(known_topics) if known_topics is not None else None
        )
        self.accept_extended_fields = accept_extended_fields
        self.webhook_timeout = webhook_timeout
        self.max_calls = max_calls
        self.max_attachment_size = max_attachment_size

    @property
    def api(self) -> Platform:
        """The platform's paths, token grant and signature header."""
        return PLATFORMS[self.platform]

    @property
    def extended_fields(self) -> bool:
        """Inbox 2.0 documents the successor fields; classic Sparkcentral only behind the
        ``accept_extended_fields`` switch."""
        return self.platform != SPARKCENTRAL or self.accept_extended_fields

    @property
    def shared_secret(self) -> str:
        return self._shared_secret

    @shared_secret.setter
    def shared_secret(self, value: str) -> None:
        self.shared_key = decode_secret(value)
        self._shared_secret = value

    def trim(self, records: List[Any]) -> None:
        """Drop the oldest records beyond ``max_calls`` (with 10% slack)."""
        limit = self.max_calls
        if limit is not None and len(records) > limit + max(limit // 10, 1):
            del records[: len(records) - limit]


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw``, None when it is not UTF-8 JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


class EmulatorTimeout(AssertionError, asyncio.TimeoutError):
    """A ``wait_for*`` helper gave up; the message carries the transcript.

    It is both an ``AssertionError`` (pytest shows it as a failed expectation) and an
    ``asyncio.TimeoutError``.
    """


@dataclass
class RecordedCall:
    """One HTTP request the emulator served (admin ``/_emulator/`` requests excluded)."""

    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    json: Any
    status: int
    at: float
    query: Dict[str, str] = field(default_factory=dict)
    response_json: Any = None
    fault: Optional[str] = None
    """Set when a fault of the FaultPlan produced the answer (``"fail"``, ``"rate_limit"``...)."""

    def header(self, name: str) -> Optional[str]:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    @property
    def conversation_id(self) -> Optional[str]:
        """The conversation a ``/virtual-agent/conversations/{id}...`` call was about."""
        marker = "/virtual-agent/conversations/"
        where = self.path.find(marker)
        if where < 0 or self.path[:where] not in ("", "/inbox/v1"):
            return None
        return self.path[where + len(marker) :].split("/", 1)[0] or None

    def to_dict(self, max_body: int = 65536) -> JSONDict:
        text: Optional[str] = None
        if len(self.body) <= max_body:
            try:
                text = self.body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "headers": dict(self.headers),
            "json": self.json,
            "body": text,
            "bodySize": len(self.body),
            "status": self.status,
            "responseJson": self.response_json,
            "fault": self.fault,
            "at": self.at,
        }


@dataclass
class TranscriptEntry:
    """One line of a conversation as a human would read it."""

    sender: str
    """``"contact"``, ``"bot"``, ``"agent"`` or ``"system"``."""
    text: Optional[str] = None
    attachment: Optional[str] = None
    """Filename of an attachment the bot sent."""
    via: Optional[str] = None
    """``"rest"`` or ``"webhook"`` for bot output, ``None`` otherwise."""
    at: float = field(default_factory=time.monotonic)
    content_type: Optional[str] = None
    size: Optional[int] = None

    def render(self) -> str:
        if self.sender == SENDER_SYSTEM:
            return self.text or ""
        parts: List[str] = []
        if self.text is not None:
            parts.append(self.text)
        if self.attachment is not None:
            parts.append(f"[attachment {self.attachment} {self.content_type or '?'}]")
        return f"{self.sender}: {' '.join(parts)}"

    def to_dict(self) -> JSONDict:
        return {
            "sender": self.sender,
            "text": self.text,
            "attachment": self.attachment,
            "contentType": self.content_type,
            "size": self.size,
            "via": self.via,
            "at": self.at,
            "line": self.render(),
        }


@dataclass
class BotAction:
    """An accepted bot action (a REST POST body or a non-empty webhook answer)."""

    body: JSONDict
    via: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class UnknownField:
    """A top-level field of a bot action the emulator does not know (accepted, not applied)."""

    conversation_id: str
    name: str
    value: Any
    via: str


@dataclass
class Conversation:
    """A conversation as Sparkcentral keeps it."""

    id: str
    queue: str = QUEUE_BOT
    contact_profile: JSONDict = field(default_factory=dict)
    medium: str = "smooch-rtm"
    channel: JSONDict = field(default_factory=dict)
    contact_attributes: List[JSONDict] = field(default_factory=list)
    topics: Set[str] = field(default_factory=set)
    ignored_topics: List[str] = field(default_factory=list)
    attachments: Dict[str, Tuple[str, bytes]] = field(default_factory=dict)
    transcript: List[TranscriptEntry] = field(default_factory=list)
    actions: List[BotAction] = field(default_factory=list)
    typing: List[str] = field(default_factory=list)
    """``indicateTyping`` values the bot sent (START/STOP), in order."""
    assignments: int = 0
    """How many times the conversation was assigned to the bot (start + hand-backs)."""
    created_at: float = field(default_factory=time.monotonic)
    language: Optional[str] = None
    tags: List[JSONDict] = field(default_factory=list)
    """``{"messageId", "tag"}`` applied by the bot, in order."""
    notes: List[str] = field(default_factory=list)
    """Texts of ``applyConversationNotes``, in order."""
    attributes_set: Dict[str, str] = field(default_factory=dict)
    """Contact attributes the bot set (an attribute that had a value is not overwritten)."""
    handover_reason: Optional[str] = None
    """Why the conversation left the bot: "bot", "webhook_failed", "reply_timeout",
    "no_question" (None while the bot has it or when it was resolved)."""
    message_ids: List[str] = field(default_factory=list)
    """``messageId`` of every contact message sent to the bot, in order."""

    def started_data(self) -> JSONDict:
        """The ``data`` of a CONVERSATION_STARTED event for this conversation."""
        data: JSONDict = {
            "conversationId": self.id,
            "contactProfile": dict(self.contact_profile),
            "contactAttributes": [dict(a) for a in self.contact_attributes],
            "medium": {"id": self.medium},
            "channel": dict(self.channel),
        }
        if self.language is not None:
            data["language"] = self.language
        return data

    def bot_texts(self, extended: bool = True) -> List[str]:
        """Texts the bot sent; ``extended=False`` ignores ``sendMessages`` (classic mode)."""
        texts: List[str] = []
        for action in self.actions:
            for message in messages_of(action.body, extended):
                text = message.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return texts

    def to_dict(self, extended: bool = True) -> JSONDict:
        return {
            "conversationId": self.id,
            "queue": self.queue,
            "contactProfile": self.contact_profile,
            "medium": self.medium,
            "channel": self.channel,
            "contactAttributes": self.contact_attributes,
            "topics": sorted(self.topics),
            "ignoredTopics": list(self.ignored_topics),
            "attachments": {
                name: {"contentType": ctype, "size": len(data)}
                for name, (ctype, data) in self.attachments.items()
            },
            "typing": list(self.typing),
            "assignments": self.assignments,
            "language": self.language,
            "tags": [dict(t) for t in self.tags],
            "notes": list(self.notes),
            "attributesSet": dict(self.attributes_set),
            "handoverReason": self.handover_reason,
            "transcript": [entry.to_dict() for entry in self.transcript],
            "actions": [{"via": a.via, "body": a.body, "at": a.at} for a in self.actions],
            "botTexts": self.bot_texts(extended),
        }


def messages_of(body: JSONDict, extended: bool = True) -> List[JSONDict]:
    """The message objects of an action body (``sendMessage`` then ``sendMessages``)."""
    messages: List[JSONDict] = []
    single = body.get("sendMessage")
    if isinstance(single, dict):
        messages.append(single)
    several = body.get("sendMessages") if extended else None
    if isinstance(several, list):
        messages.extend(m for m in several if isinstance(m, dict))
    return messages


@dataclass
class WebhookResult:
    """What the bot answered to one signed webhook delivery.

    ``deliver(..., copies=n)`` returns the result of the first copy (in sending order) and
    puts every copy's result, in sending order, in ``results``.
    """

    status: int
    json: Any
    text: str
    elapsed: float
    idempotency_key: Optional[str]
    event_type: Optional[str] = None
    conversation_id: Optional[str] = None
    body: bytes = field(default=b"", repr=False)
    """The exact bytes that were POSTed."""
    headers: Dict[str, str] = field(default_factory=dict, repr=False)
    """Response headers."""
    delivered: bool = True
    """False when no webhook was sent (e.g. the contact wrote while a human agent has it)."""
    applied: bool = False
    """True when a non-empty answer was applied as a bot action."""
    error: Optional[str] = None
    """Why a non-empty answer was not applied (invalid, conversation not with the bot...)."""
    results: List[WebhookResult] = field(default_factory=list, repr=False)
    at: float = field(default_factory=time.monotonic)
    """When the answer arrived (``time.monotonic()``, like ``RecordedCall.at``)."""
    attempts: List[JSONDict] = field(default_factory=list)
    """Every try of this delivery under the retry rule: ``{status, elapsed, error}``
    (status 0 when no answer came)."""
    message_id: Optional[str] = None
    """``message.messageId`` of the contact message this delivery carried."""

    @property
    def ok(self) -> bool:
        return self.delivered and self.status == 200

    def to_dict(self) -> JSONDict:
        return {
            "status": self.status,
            "body": self.json if self.json is not None else self.text,
            "elapsed": self.elapsed,
            "idempotencyKey": self.idempotency_key,
            "delivered": self.delivered,
            "applied": self.applied,
            "error": self.error,
            "at": self.at,
            "attempts": [dict(a) for a in self.attempts],
            "messageId": self.message_id,
        }


@dataclass
class EmulatorEvent:
    """Something happened; given to the listeners of ``SparkcentralEmulator.add_listener``.

    ``kind`` is ``"call"`` (a request was served), ``"transcript"`` (a transcript entry was
    added), ``"webhook"`` (a webhook delivery finished) or ``"token"`` (a token was issued).
    """

    kind: str
    line: str
    conversation_id: Optional[str] = None
    entry: Optional[TranscriptEntry] = None
    call: Optional[RecordedCall] = None
    result: Optional[WebhookResult] = None
