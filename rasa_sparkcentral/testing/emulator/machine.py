"""The emulator's state machine: conversations, their queues and who owns them.

A conversation is in the "bot" queue while the virtual agent has it (assigned by
CONVERSATION_STARTED/DELEGATED), in "new" after a HANDOVER (a human agent's turn) and in
"resolved" after RESOLVED. Bot actions (REST bodies and webhook answers) are validated and
applied here; nothing here speaks HTTP.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .contact import ASSIGNMENT_EVENTS, EVENT_INBOUND_MESSAGE_RECEIVED
from .events import EventBus
from .models import (
    QUEUE_BOT,
    QUEUE_NEW,
    QUEUE_RESOLVED,
    SENDER_AGENT,
    SENDER_BOT,
    SENDER_CONTACT,
    SENDER_SYSTEM,
    BotAction,
    Conversation,
    EmulatorEvent,
    EmulatorSettings,
    JSONDict,
    TranscriptEntry,
    UnknownField,
    WebhookResult,
    messages_of,
)

# The action vocabulary as Sparkcentral defines it. Restated on purpose (not imported from
# rasa_sparkcentral.protocol): the emulator plays the other side, so a wrong name in the
# channel must not be a wrong name here too.
COMPLETE_VALUES = ("HANDOVER", "RESOLVED")
TYPING_VALUES = ("START", "STOP")
CLASSIC_FIELDS = ("sendMessage", "applyTopics", "complete")
EXTENDED_FIELDS = ("sendMessages", "setContactAttributes", "indicateTyping")
MESSAGE_FIELDS = ("text", "attachment")


class ConversationMachine:
    """Every conversation the emulated Sparkcentral knows, and the rules that move them."""

    def __init__(self, settings: EmulatorSettings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.conversations: Dict[str, Conversation] = {}
        self.unknown_fields: List[UnknownField] = []
        self.webhook_answer_errors: List[str] = []

    def reset(self) -> None:
        self.conversations.clear()
        self.unknown_fields.clear()
        self.webhook_answer_errors.clear()

    # ------------------------------------------------------------------ queries
    def conversation(self, conversation_id: str) -> Conversation:
        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise KeyError(f"unknown conversation {conversation_id!r}") from None

    def bot_texts(self, conversation_id: str) -> List[str]:
        conv = self.conversations.get(conversation_id)
        return [] if conv is None else conv.bot_texts(self.settings.accept_extended_fields)

    def transcript_text(self, conversation_id: Optional[str] = None) -> str:
        """Human-readable transcript of one conversation, or of all of them."""
        if conversation_id is not None:
            conv = self.conversations.get(conversation_id)
            if conv is None:
                return f"(no conversation {conversation_id})"
            return "\n".join(entry.render() for entry in conv.transcript)
        parts = []
        for conv in self.conversations.values():
            lines = [f"== conversation {conv.id} (queue: {conv.queue}) =="]
            lines.extend(entry.render() for entry in conv.transcript)
            parts.append("\n".join(lines))
        return "\n\n".join(parts) if parts else "(no conversations)"

    # ------------------------------------------------------------------ the people
    def contact_writes_to_people(self, conv: Conversation, text: Optional[str]) -> None:
        """The contact writes while the bot does not have the conversation."""
        self.add_entry(conv, TranscriptEntry(sender=SENDER_CONTACT, text=text))

    def agent_says(self, conversation_id: str, text: str) -> None:
        """A human agent replies to the contact (transcript only; the bot is not told)."""
        conv = self.conversation(conversation_id)
        self.add_entry(conv, TranscriptEntry(sender=SENDER_AGENT, text=text))

    def agent_resolves(self, conversation_id: str) -> None:
        """A human agent resolves the conversation (queue -> "resolved"; the bot is not told)."""
        conv = self.conversation(conversation_id)
        conv.queue = QUEUE_RESOLVED
        conv.typing = None
        self.add_entry(conv, _system("[RESOLVED by the agent -> conversation closed]"))

    # ------------------------------------------------------------------ events in
    def before_delivery(self, event_type: str, data: JSONDict) -> None:
        """A webhook event is about to be sent: assignments move the conversation to the
        bot, a contact message lands in the transcript."""
        cid = data.get("conversationId")
        if not isinstance(cid, str):
            return
        if event_type in ASSIGNMENT_EVENTS:
            conv = self.conversations.get(cid)
            if conv is None:
                conv = Conversation(id=cid)
                self.conversations[cid] = conv
            profile = data.get("contactProfile")
            if isinstance(profile, dict):
                conv.contact_profile = dict(profile)
            attributes = data.get("contactAttributes")
            if isinstance(attributes, list):
                conv.contact_attributes = [dict(a) for a in attributes if isinstance(a, dict)]
            medium = data.get("medium")
            if isinstance(medium, dict) and isinstance(medium.get("id"), str):
                conv.medium = medium["id"]
            elif isinstance(medium, str):
                conv.medium = medium
            channel = data.get("channel")
            if isinstance(channel, dict):
                conv.channel = dict(channel)
            conv.queue = QUEUE_BOT
            conv.typing = None
            conv.assignments += 1
            self.add_entry(
                conv,
                TranscriptEntry(sender=SENDER_SYSTEM, text=f"[{event_type} -> bot queue]"),
            )
        elif event_type == EVENT_INBOUND_MESSAGE_RECEIVED:
            conv = self.conversations.get(cid)
            if conv is None:
                conv = Conversation(id=cid, assignments=1)
                self.conversations[cid] = conv
            message = data.get("message")
            text = message.get("text") if isinstance(message, dict) else None
            self.add_entry(
                conv,
                TranscriptEntry(
                    sender=SENDER_CONTACT, text=text if isinstance(text, str) else None
                ),
            )

    def apply_webhook_answer(self, result: WebhookResult) -> None:
        if result.status != 200:
            return
        where = f"{result.event_type} {result.conversation_id} ({result.idempotency_key})"
        if result.json is None:
            if result.text.strip():
                result.error = "webhook answer is not JSON"
            else:
                result.error = "webhook answered 200 with an empty body (expected {})"
        elif not isinstance(result.json, dict):
            result.error = "webhook answer is not a JSON object"
        elif any(value is not None for value in result.json.values()):
            conv = (
                self.conversations.get(result.conversation_id) if result.conversation_id else None
            )
            if conv is None:
                result.error = "webhook answer for an unknown conversation"
            elif conv.queue != QUEUE_BOT:
                result.error = f"conversation is in the {conv.queue!r} queue, not the bot's"
            else:
                result.error = self.validate(conv, result.json)
                if result.error is None:
                    self.apply(conv, result.json, via="webhook")
                    result.applied = True
        if result.error is not None:
            self.webhook_answer_errors.append(f"{where}: {result.error}")
            self.settings.trim(self.webhook_answer_errors)

    def validate(self, conv: Conversation, payload: JSONDict) -> Optional[str]:
        known = self.known_fields()
        for name, value in payload.items():
            if name not in known or value is None:
                continue
            if name == "sendMessage":
                error = self._validate_message(conv, value, "sendMessage")
            elif name == "applyTopics":
                error = _validate_str_list(value, "applyTopics")
            elif name == "complete":
                error = (
                    None
                    if value in COMPLETE_VALUES
                    else f'complete must be null, "HANDOVER" or "RESOLVED", not {value!r}'
                )
            elif name == "sendMessages":
                if not isinstance(value, list):
                    error = "sendMessages must be a list of messages"
                else:
                    error = None
                    for index, message in enumerate(value):
                        error = self._validate_message(conv, message, f"sendMessages[{index}]")
                        if error:
                            break
            elif name == "setContactAttributes":
                if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    error = "setContactAttributes must be an object of string values"
                else:
                    error = None
            else:  # indicateTyping
                error = (
                    None
                    if value in TYPING_VALUES
                    else f'indicateTyping must be "START" or "STOP", not {value!r}'
                )
            if error:
                return error
        return None

    def known_fields(self) -> Tuple[str, ...]:
        if self.settings.accept_extended_fields:
            return CLASSIC_FIELDS + EXTENDED_FIELDS
        return CLASSIC_FIELDS

    @staticmethod
    def _validate_message(conv: Conversation, message: Any, where: str) -> Optional[str]:
        if not isinstance(message, dict):
            return f"{where} must be an object"
        text = message.get("text")
        attachment = message.get("attachment")
        if text is not None and not isinstance(text, str):
            return f"{where}.text must be a string"
        if attachment is not None and not isinstance(attachment, str):
            return f"{where}.attachment must be a string (the filename of an uploaded file)"
        if not text and attachment is None:
            return f"{where} has neither a text nor an attachment"
        if attachment is not None and attachment not in conv.attachments:
            return (
                f"{where}.attachment {attachment!r} was not uploaded for conversation "
                f"{conv.id}: PUT /virtual-agent/conversations/{conv.id}/attachments/"
                f"{attachment} first"
            )
        return None

    def apply(self, conv: Conversation, payload: JSONDict, via: str) -> None:
        conv.actions.append(BotAction(body=payload, via=via))
        known = self.known_fields()
        for name, value in payload.items():
            if name not in known:
                self.unknown_fields.append(UnknownField(conv.id, name, value, via))
        for message in self.messages(payload):
            for key, value in message.items():
                if key not in MESSAGE_FIELDS:
                    self.unknown_fields.append(
                        UnknownField(conv.id, f"sendMessage.{key}", value, via)
                    )
            attachment = message.get("attachment")
            content_type: Optional[str] = None
            size: Optional[int] = None
            if isinstance(attachment, str):
                content_type, data = conv.attachments[attachment]
                size = len(data)
            self.add_entry(
                conv,
                TranscriptEntry(
                    sender=SENDER_BOT,
                    text=message.get("text") or None,
                    attachment=attachment,
                    via=via,
                    content_type=content_type,
                    size=size,
                ),
            )
        extended = self.settings.accept_extended_fields
        attributes = payload.get("setContactAttributes") if extended else None
        if isinstance(attributes, dict) and attributes:
            for key, value in attributes.items():
                for existing in conv.contact_attributes:
                    if existing.get("attribute") == key:
                        existing["value"] = value
                        break
                else:
                    conv.contact_attributes.append(
                        {"attribute": key, "value": value, "source": "VIRTUAL_AGENT"}
                    )
            shown = ", ".join(f"{k}={v}" for k, v in attributes.items())
            self.add_entry(conv, _system(f"[contact attributes: {shown}]", via))
        typing = payload.get("indicateTyping") if extended else None
        if isinstance(typing, str):
            conv.typing = typing
        topics = payload.get("applyTopics")
        if isinstance(topics, list):
            known_topics = self.settings.known_topics
            applied = [t for t in topics if known_topics is None or t in known_topics]
            ignored = [t for t in topics if t not in applied]
            conv.topics.update(applied)
            conv.ignored_topics.extend(ignored)
            line = f"[topics: {', '.join(applied)}]"
            if ignored:
                line += f" (ignored unknown: {', '.join(ignored)})"
            self.add_entry(conv, _system(line, via))
        complete = payload.get("complete")
        if complete == "HANDOVER":
            conv.queue = QUEUE_NEW
            conv.typing = None
            self.add_entry(conv, _system("[HANDOVER -> new queue]", via))
        elif complete == "RESOLVED":
            conv.queue = QUEUE_RESOLVED
            conv.typing = None
            self.add_entry(conv, _system("[RESOLVED -> conversation closed]", via))
        self.bus.notify()

    def messages(self, payload: JSONDict) -> List[JSONDict]:
        return messages_of(payload, self.settings.accept_extended_fields)

    def add_entry(self, conv: Conversation, entry: TranscriptEntry) -> None:
        conv.transcript.append(entry)
        self.bus.emit(
            EmulatorEvent(
                kind="transcript",
                line=f"[{conv.id}] {entry.render()}",
                conversation_id=conv.id,
                entry=entry,
            )
        )


def _system(text: str, via: Optional[str] = None) -> TranscriptEntry:
    return TranscriptEntry(sender=SENDER_SYSTEM, text=text, via=via)


def _validate_str_list(value: Any, name: str) -> Optional[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f"{name} must be a list of strings"
    return None
