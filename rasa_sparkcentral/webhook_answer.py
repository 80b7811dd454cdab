"""Webhook reply mode, in one place: the turn's conversation actions are held until the
webhook is answered; the answer carries what it can (``merge_answer``), and the rest goes
over REST before anything the turn produces later and before the conversation's next turn.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Tuple

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.output import RestSink

logger = logging.getLogger(__name__)


class WebhookAnswer:
    """A sink for ``SparkcentralOutput`` serving one webhook in reply mode "webhook".

    ``bodies``: what the turn produced before the answer; ``pending``: what the answer
    could not carry, sent over REST (``rest``) before anything the turn produces later."""

    def __init__(self, rest: RestSink, settings: Settings) -> None:
        self._rest = rest
        self._settings = settings
        self.bodies: List[Dict[str, Any]] = []
        self.pending: List[Dict[str, Any]] = []
        self.closed = False
        self.answered = asyncio.Event()

    @property
    def rest(self) -> RestSink:
        return self._rest

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
        if not self.closed:
            self.bodies.append(body)
            return
        await self.flush(recipient_id)
        await self._rest.put(recipient_id, body)

    async def flush(self, recipient_id: str) -> None:
        """Send what the webhook answer could not carry."""
        while self.pending:
            await self._rest.put(recipient_id, self.pending.pop(0))

    def close(self, pending: List[Dict[str, Any]]) -> None:
        self.closed = True
        self.pending = pending
        self.answered.set()

    async def answer(self, conversation_id: str, turn_done: asyncio.Future[None]) -> Dict[str, Any]:
        """Wait for the turn (up to the deadline), answer with what it produced; anything
        the answer can't carry goes over REST (``send_rest``)."""
        timeout = self._settings.webhook_timeout
        try:
            await asyncio.wait_for(asyncio.shield(turn_done), timeout=timeout)
        except asyncio.TimeoutError:
            logger.info(
                "Conversation %s: the bot took longer than %.1fs; answering the webhook now, "
                "later replies go over REST",
                conversation_id,
                timeout,
            )
        answer, rest = merge_answer(
            self.bodies,
            can_use_rest=self._rest.client is not None,
            allow_successor_fields=self._settings.allow_successor_fields,
        )
        if answer.get("applyTags") and self._rest.inbound_message_id is None:
            # tag names in an answer tag the message it answers: an assignment event has none
            logger.warning(
                "Conversation %s: tags %s dropped: this webhook answers no contact message",
                conversation_id,
                ", ".join(repr(t) for t in answer.pop("applyTags")),
            )
        self.close(rest)
        return answer

    async def send_rest(self, conversation_id: str) -> None:
        """After the turn: once the webhook is answered, send what the answer could not
        carry (before the conversation's next turn)."""
        try:
            await asyncio.wait_for(
                self.answered.wait(), timeout=self._settings.webhook_timeout + 1.0
            )
        except asyncio.TimeoutError:
            # the webhook request went away before it was answered: everything goes over REST
            if not self.closed:
                self.close(list(self.bodies))
        await self.flush(conversation_id)


def merge_answer(
    bodies: List[Dict[str, Any]], *, can_use_rest: bool, allow_successor_fields: bool
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Return (webhook answer, actions still to send over REST, in order).

    The classic answer carries one message: the first goes in the answer with every
    topic; later messages go over REST, the last of them carrying ``complete`` so the
    conversation is not handed over before they arrive. Without API keys everything
    must fit in the answer: later texts are joined to the first (or listed in
    ``sendMessages`` where the successor fields are allowed).

    The successor fields merge in order: tag names (which in an answer tag the contact's
    latest message) and notes are listed once each, contact attributes are combined
    (a later value wins), the last ``indicateTyping`` counts. A tag that names its message
    (``{"messageId", "tag"}``) only exists over REST, so it goes there (before the
    completion); without API keys it is dropped with a warning.
    """
    messages: List[Dict[str, Any]] = []
    topics: List[str] = []
    tag_names: List[str] = []
    message_tags: List[Dict[str, Any]] = []
    notes: List[Dict[str, Any]] = []
    attributes: Dict[str, Any] = {}
    typing: Optional[str] = None
    complete: Optional[str] = None
    for body in bodies:
        if body.get("sendMessage"):
            messages.append(dict(body["sendMessage"]))
        for message in body.get("sendMessages") or []:
            if isinstance(message, dict):
                messages.append(dict(message))
        for topic in body.get("applyTopics") or []:
            if topic not in topics:
                topics.append(topic)
        for tag in body.get("applyTags") or []:
            if isinstance(tag, str):
                if tag not in tag_names:
                    tag_names.append(tag)
            elif tag not in message_tags:
                message_tags.append(dict(tag))
        for note in body.get("applyConversationNotes") or []:
            if note not in notes:
                notes.append(dict(note))
        attributes.update(body.get("setContactAttributes") or {})
        if body.get("indicateTyping"):
            typing = body["indicateTyping"]
        if body.get("complete"):
            complete = body["complete"]

    answer: Dict[str, Any] = {}
    if topics:
        answer["applyTopics"] = topics
    if tag_names:
        answer["applyTags"] = tag_names
    if notes:
        answer["applyConversationNotes"] = notes
    if attributes:
        answer["setContactAttributes"] = attributes
    if typing:
        answer["indicateTyping"] = typing
    if message_tags and not can_use_rest:
        logger.warning(
            "Tags %s name their messages, which only the REST API takes, and no API keys "
            "are configured: dropped (tag names, which tag the latest message, fit in the "
            "webhook answer)",
            ", ".join(repr(t.get("tag")) for t in message_tags),
        )
        message_tags = []

    rest: List[Dict[str, Any]] = []
    if len(messages) <= 1 or not can_use_rest:
        if messages:
            if len(messages) > 1 and allow_successor_fields:
                answer["sendMessages"] = messages
            else:
                answer["sendMessage"] = _join(messages)
    else:
        answer["sendMessage"] = messages[0]
        rest = [{"sendMessage": m} for m in messages[1:]]
    if message_tags:
        rest.append({"applyTags": message_tags})
    if complete:
        if rest:
            rest[-1]["complete"] = complete
        else:
            answer["complete"] = complete
    # the fields in the order the classic answer lists them
    firsts: Tuple[str, ...] = ("sendMessage", "sendMessages")
    ordered: Dict[str, Any] = {k: answer[k] for k in firsts if k in answer}
    ordered.update({k: v for k, v in answer.items() if k not in ordered})
    return ordered, rest


def _join(messages: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One message from several: texts joined by blank lines, the first attachment kept."""
    if len(messages) == 1:
        return messages[0]
    texts = [m["text"] for m in messages if m.get("text")]
    attachments = [m["attachment"] for m in messages if m.get("attachment")]
    joined: Dict[str, Any] = {}
    if texts:
        joined["text"] = "\n\n".join(texts)
    if attachments:
        joined["attachment"] = attachments[0]
    return joined
