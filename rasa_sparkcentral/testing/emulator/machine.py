"""The emulator's state machine: conversations, their queues and who owns them.

A conversation is in the "bot" queue while the virtual agent has it (assigned by
CONVERSATION_STARTED/DELEGATED), in "new" after a HANDOVER (a human agent's turn) and in
"resolved" after RESOLVED. Bot actions (REST bodies and webhook answers) are validated and
applied here; nothing here speaks HTTP.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Dict, List, Optional, Tuple

from rasa_sparkcentral.protocol import ATTRIBUTE_KEY_PATTERN

from .contact import (
    ASSIGNMENT_EVENTS,
    EVENT_CONVERSATION_DELEGATED,
    EVENT_INBOUND_MESSAGE_RECEIVED,
)
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
EXTENDED_FIELDS = (
    "sendMessages",
    "setContactAttributes",
    "indicateTyping",
    "applyTags",
    "applyConversationNotes",
)
MESSAGE_FIELDS = ("text", "attachment")
_ATTRIBUTE_KEY = re.compile(ATTRIBUTE_KEY_PATTERN)

# Why a conversation left the bot (Conversation.handover_reason).
REASON_BOT = "bot"
REASON_WEBHOOK_FAILED = "webhook_failed"
REASON_REPLY_TIMEOUT = "reply_timeout"
REASON_NO_QUESTION = "no_question"
# The two timers a conversation with the bot may run.
TIMER_REPLY = "reply"
TIMER_QUESTION = "question"


class ConversationMachine:
    """Every conversation the emulated Sparkcentral knows, and the rules that move them."""

    def __init__(self, settings: EmulatorSettings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.conversations: Dict[str, Conversation] = {}
        self.unknown_fields: List[UnknownField] = []
        self.webhook_answer_errors: List[str] = []
        self._timers: Dict[Tuple[str, str], asyncio.TimerHandle] = {}

    def reset(self) -> None:
        self.cancel_timers()
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
        return [] if conv is None else conv.bot_texts(self.settings.extended_fields)

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
        self.cancel_timers(conv.id)
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
            language = data.get("language")
            if isinstance(language, str):
                conv.language = language
            conv.queue = QUEUE_BOT
            conv.handover_reason = None
            conv.assignments += 1
            self.add_entry(
                conv,
                TranscriptEntry(sender=SENDER_SYSTEM, text=f"[{event_type} -> bot queue]"),
            )
            self._cancel(cid, TIMER_REPLY)
            if event_type == EVENT_CONVERSATION_DELEGATED:
                # the bot is expected to ask the first question, or it is handed back
                self._arm(
                    conv,
                    TIMER_QUESTION,
                    self.settings.delegated_question_timeout,
                    REASON_NO_QUESTION,
                )
        elif event_type == EVENT_INBOUND_MESSAGE_RECEIVED:
            conv = self.conversations.get(cid)
            if conv is None:
                conv = Conversation(id=cid, assignments=1)
                self.conversations[cid] = conv
            message = data.get("message")
            text = message.get("text") if isinstance(message, dict) else None
            message_id = message.get("messageId") if isinstance(message, dict) else None
            if isinstance(message_id, str):
                conv.message_ids.append(message_id)
            if conv.queue == QUEUE_BOT and (cid, TIMER_REPLY) not in self._timers:
                # the oldest unanswered contact message sets the deadline
                self._arm(conv, TIMER_REPLY, self.settings.reply_timeout, REASON_REPLY_TIMEOUT)
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
                result.error = self.validate(conv, result.json, via="webhook")
                if result.error is None:
                    self.apply(conv, result.json, via="webhook")
                    result.applied = True
        if result.error is not None:
            self.webhook_answer_errors.append(f"{where}: {result.error}")
            self.settings.trim(self.webhook_answer_errors)

    def validate(self, conv: Conversation, payload: JSONDict, via: str = "rest") -> Optional[str]:
        """Why ``payload`` is refused (400), or None. ``via`` is "rest" or "webhook": a
        webhook answer tags by name, a REST body by ``{messageId, tag}``."""
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
                    bad = [k for k in value if not _ATTRIBUTE_KEY.match(k)]
                    error = (
                        f"setContactAttributes keys must match {ATTRIBUTE_KEY_PATTERN}: "
                        + ", ".join(repr(k) for k in bad)
                        if bad
                        else None
                    )
            elif name == "applyTags":
                error = self._validate_tags(conv, value, via)
            elif name == "applyConversationNotes":
                if not isinstance(value, list) or not all(
                    isinstance(n, dict) and isinstance(n.get("text"), str) and n["text"]
                    for n in value
                ):
                    error = 'applyConversationNotes must be a list of {"text": "..."}'
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

    @staticmethod
    def _validate_tags(conv: Conversation, value: Any, via: str) -> Optional[str]:
        if not isinstance(value, list):
            return "applyTags must be a list"
        if via == "webhook":
            if not all(isinstance(t, str) and t for t in value):
                return "applyTags in a webhook answer must be a list of tag names"
            if not conv.message_ids:
                return "applyTags: the conversation has no contact message to tag"
            return None
        for tag in value:
            if not (
                isinstance(tag, dict)
                and isinstance(tag.get("messageId"), str)
                and isinstance(tag.get("tag"), str)
                and tag["tag"]
            ):
                return 'applyTags over REST must be a list of {"messageId": ..., "tag": ...}'
            if tag["messageId"] not in conv.message_ids:
                return f"applyTags: unknown messageId {tag['messageId']!r} in {conv.id}"
        return None

    def known_fields(self) -> Tuple[str, ...]:
        if self.settings.extended_fields:
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
                f"{conv.id}: PUT .../virtual-agent/conversations/{conv.id}/attachments/"
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
        extended = self.settings.extended_fields
        if self.messages(payload):
            self._cancel(conv.id, TIMER_REPLY)
            self._cancel(conv.id, TIMER_QUESTION)
        attributes = payload.get("setContactAttributes") if extended else None
        if isinstance(attributes, dict) and attributes:
            self._set_attributes(conv, attributes, via)
        tags = payload.get("applyTags") if extended else None
        if isinstance(tags, list) and tags:
            for tag in tags:
                if isinstance(tag, str):  # a name in a webhook answer: the latest message
                    conv.tags.append({"messageId": conv.message_ids[-1], "tag": tag})
                else:
                    conv.tags.append({"messageId": tag["messageId"], "tag": tag["tag"]})
            shown = ", ".join(t["tag"] for t in conv.tags[-len(tags) :])
            self.add_entry(conv, _system(f"[tags: {shown}]", via))
        notes = payload.get("applyConversationNotes") if extended else None
        if isinstance(notes, list):
            for note in notes:
                conv.notes.append(note["text"])
                self.add_entry(conv, _system(f"[note: {note['text']}]", via))
        typing = payload.get("indicateTyping") if extended else None
        if isinstance(typing, str):
            conv.typing.append(typing)
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
            self.hand_over(conv, REASON_BOT, "[HANDOVER -> new queue]", via)
        elif complete == "RESOLVED":
            conv.queue = QUEUE_RESOLVED
            self.cancel_timers(conv.id)
            self.add_entry(conv, _system("[RESOLVED -> conversation closed]", via))
        self.bus.notify()

    def _set_attributes(self, conv: Conversation, attributes: JSONDict, via: str) -> None:
        """Set the contact's attributes; one that already has a value keeps it."""
        shown: List[str] = []
        for key, value in attributes.items():
            existing = next((a for a in conv.contact_attributes if a.get("attribute") == key), None)
            if existing is not None and existing.get("value") not in (None, ""):
                shown.append(f"{key} kept {existing.get('value')}")
                continue
            if existing is None:
                conv.contact_attributes.append(
                    {"attribute": key, "value": value, "source": "VIRTUAL_AGENT"}
                )
            else:
                existing["value"] = value
            conv.attributes_set[key] = value
            shown.append(f"{key}={value}")
        self.add_entry(conv, _system(f"[contact attributes: {', '.join(shown)}]", via))

    # ------------------------------------------------------------------ handover rules
    def hand_over(
        self, conv: Conversation, reason: str, line: str, via: Optional[str] = None
    ) -> None:
        """The conversation goes to the New queue (a human agent's turn)."""
        conv.queue = QUEUE_NEW
        conv.handover_reason = reason
        self.cancel_timers(conv.id)
        self.add_entry(conv, _system(line, via))
        self.bus.notify()

    def webhook_failed(self, conversation_id: Optional[str], attempts: int) -> None:
        """Every try of a delivery failed: a human gets the conversation."""
        conv = self.conversations.get(conversation_id) if conversation_id else None
        if conv is not None and conv.queue == QUEUE_BOT:
            self.hand_over(
                conv,
                REASON_WEBHOOK_FAILED,
                f"[webhook failed {attempts} time(s) -> new queue]",
            )

    def _arm(self, conv: Conversation, timer: str, delay: float, reason: str) -> None:
        self._cancel(conv.id, timer)
        loop = asyncio.get_running_loop()
        self._timers[(conv.id, timer)] = loop.call_later(
            delay, self._expire, conv.id, timer, reason, delay
        )

    def _expire(self, conversation_id: str, timer: str, reason: str, delay: float) -> None:
        self._timers.pop((conversation_id, timer), None)
        conv = self.conversations.get(conversation_id)
        if conv is not None and conv.queue == QUEUE_BOT:
            what = "no bot reply" if timer == TIMER_REPLY else "no first question"
            self.hand_over(conv, reason, f"[{what} within {delay:g}s -> new queue]")

    def _cancel(self, conversation_id: str, timer: str) -> None:
        handle = self._timers.pop((conversation_id, timer), None)
        if handle is not None:
            handle.cancel()

    def cancel_timers(self, conversation_id: Optional[str] = None) -> None:
        """Stop the reply and first-question timers of one conversation (None: of all)."""
        for key in list(self._timers):
            if conversation_id is None or key[0] == conversation_id:
                self._timers.pop(key).cancel()

    def messages(self, payload: JSONDict) -> List[JSONDict]:
        return messages_of(payload, self.settings.extended_fields)

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
