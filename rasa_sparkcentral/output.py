"""The bot's replies, as Sparkcentral conversation actions (``SparkcentralOutput``)."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import posixpath
import re
from typing import Any, Dict, Iterable, List, Optional, Protocol, Set, Tuple
from urllib.parse import unquote, urlparse

from rasa.core.channels.channel import OutputChannel

from rasa_sparkcentral import buttons as button_list
from rasa_sparkcentral.client import Outcome, SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import (
    ACTION_FIELDS,
    ATTRIBUTE_KEY_PATTERN,
    CHANNEL_NAME,
    SUCCESSOR_FIELDS,
    action_from_custom,
    split_contact_attributes,
)
from rasa_sparkcentral.state import ChannelState

logger = logging.getLogger(__name__)


#: Every field a bot message may carry for the platform (top level, ``custom`` or
#: ``metadata`` of a response, ``utter_message`` keyword arguments).
PROTOCOL_FIELDS = ACTION_FIELDS + SUCCESSOR_FIELDS


class RestSink:
    """Sends each conversation action over Sparkcentral's REST API as it comes, and stops
    once Sparkcentral says the conversation is no longer the bot's.

    Over REST a tag names its message: tag names (``applyTags: ["vip"]``) become
    ``{"messageId": <inbound_message_id>, "tag": "vip"}``, the contact message this turn
    answers; without one they are dropped with a warning."""

    def __init__(
        self, client: Optional[SparkcentralClient], inbound_message_id: Optional[str] = None
    ) -> None:
        self.client = client
        self.inbound_message_id = inbound_message_id
        self.outcomes: List[Outcome] = []
        self.gone = False

    @property
    def rest(self) -> RestSink:
        return self

    def for_rest(self, recipient_id: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """``body`` as the REST API takes it: tag names name this turn's message."""
        body, dropped = tags_for_rest(body, self.inbound_message_id)
        if dropped:
            logger.warning(
                "Conversation %s: tags %s dropped: over REST a tag names the message it "
                "tags (messageId) and this reply answers no contact message with an id; "
                'give {"messageId": ..., "tag": ...} to tag a message yourself',
                recipient_id,
                ", ".join(repr(t) for t in dropped),
            )
        return body

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
        body = self.for_rest(recipient_id, body)
        if not body:
            return
        if self.client is None:
            logger.error(
                "Conversation %s: the webhook was already answered and no API keys are "
                "configured, so this reply cannot be delivered: %s",
                recipient_id,
                _describe(body),
            )
            self.outcomes.append(Outcome.FAILED)
            return
        if self.gone:
            logger.debug("Conversation %s is no longer the bot's; skipped a reply", recipient_id)
            return
        outcome = await self.client.act(recipient_id, body)
        self.outcomes.append(outcome)
        if outcome is Outcome.GONE:
            self.gone = True


class Sink(Protocol):
    """Where ``SparkcentralOutput`` writes conversation actions: ``RestSink``, or the
    webhook answer (``webhook_answer.WebhookAnswer``), which falls back on a RestSink."""

    @property
    def rest(self) -> RestSink: ...

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None: ...


class SparkcentralOutput(OutputChannel):
    """Turns each bot message into a Sparkcentral conversation action and writes it to a
    sink (REST by default), in the order the bot produced them. One instance serves one
    incoming message."""

    def __init__(
        self,
        client: Optional[SparkcentralClient],
        state: ChannelState,
        settings: Settings,
        sink: Optional[Sink] = None,
        inbound_message_id: Optional[str] = None,
    ) -> None:
        self.client = client
        self.state = state
        self.settings = settings
        self.sink: Sink = sink if sink is not None else RestSink(client)
        if inbound_message_id is not None:
            self.inbound_message_id = inbound_message_id

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @property
    def inbound_message_id(self) -> Optional[str]:
        """``message.messageId`` of the contact message this turn answers: what tag names
        apply to over REST (kept by the REST sink, which builds those bodies)."""
        return self.sink.rest.inbound_message_id

    @inbound_message_id.setter
    def inbound_message_id(self, value: Optional[str]) -> None:
        self.sink.rest.inbound_message_id = value

    async def deliver(self, recipient_id: str, body: Dict[str, Any]) -> None:
        """Write one conversation action to the sink."""
        if body:
            await self.sink.put(recipient_id, body)

    # -- Rasa's send_* API -------------------------------------------------------------

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        """Like Rasa's, plus protocol fields given at the top level of a message
        (``utter_message(complete="HANDOVER", applyTags=["vip"])``, a response from an NLG
        server) or in the ``metadata`` of a domain response; ``custom`` goes through
        ``send_custom_json``. The protocol fields follow the message's text."""
        message = dict(message)
        extra = {k: message.pop(k) for k in PROTOCOL_FIELDS if k in message}
        metadata = message.get("metadata")
        if isinstance(metadata, dict) and any(k in metadata for k in PROTOCOL_FIELDS):
            metadata = dict(metadata)
            extra.update({k: metadata.pop(k) for k in PROTOCOL_FIELDS if k in metadata})
            message["metadata"] = metadata
        await super().send_response(recipient_id, message)
        if extra:
            await self._send_protocol_fields(recipient_id, extra)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.deliver(recipient_id, {"sendMessage": {"text": text}})

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: List[Dict[str, Any]], **kwargs: Any
    ) -> None:
        usable = button_list.normalise(buttons)
        if usable:
            await self.state.save_buttons(recipient_id, usable)
        await self.deliver(
            recipient_id, {"sendMessage": {"text": button_list.render(text, usable)}}
        )

    async def send_quick_replies(
        self,
        recipient_id: str,
        text: str,
        quick_replies: List[Dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        await self.send_text_with_buttons(recipient_id, text, quick_replies)

    async def send_elements(
        self, recipient_id: str, elements: Iterable[Dict[str, Any]], **kwargs: Any
    ) -> None:
        for element in elements:
            title = element.get("title") or ""
            subtitle = element.get("subtitle") or ""
            text = f"{title}\n{subtitle}".strip()
            if element.get("image_url"):
                await self.send_image_url(recipient_id, str(element["image_url"]))
            await self.send_text_with_buttons(recipient_id, text, element.get("buttons") or [])

    async def send_custom_json(
        self, recipient_id: str, json_message: Dict[str, Any], **kwargs: Any
    ) -> None:
        if not isinstance(json_message, dict):
            logger.warning(
                "Conversation %s: custom payload is not an object; ignored", recipient_id
            )
            return
        await self._send_protocol_fields(recipient_id, json_message)

    async def _send_protocol_fields(self, recipient_id: str, payload: Dict[str, Any]) -> None:
        payload = self._checked_attributes(recipient_id, payload)
        allowed = self.settings.allow_successor_fields
        if not allowed:
            withheld = [k for k in SUCCESSOR_FIELDS if payload.get(k) is not None]
            if withheld:
                _warn_withheld(recipient_id, withheld)
                payload = {k: v for k, v in payload.items() if k not in withheld}
        try:
            body = action_from_custom(payload, allow_successor_fields=allowed)
        except ValueError as e:
            logger.warning("Conversation %s: custom payload ignored: %s", recipient_id, e)
            return
        ignored = sorted(k for k in set(payload) - set(body) if payload[k] is not None)
        empty = [k for k in ignored if k in PROTOCOL_FIELDS]
        unknown = [k for k in ignored if k not in PROTOCOL_FIELDS]
        if unknown:
            logger.warning(
                "Conversation %s: custom payload fields %s are not sent to Sparkcentral "
                "(it knows %s)",
                recipient_id,
                ", ".join(unknown),
                ", ".join(PROTOCOL_FIELDS if allowed else ACTION_FIELDS),
            )
        if empty:
            logger.debug("Conversation %s: empty fields %s skipped", recipient_id, empty)
        await self.deliver(recipient_id, body)

    @staticmethod
    def _checked_attributes(recipient_id: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        """The payload with only the contact attributes the platform accepts (keys
        ``^[a-zA-Z0-9_]+$``); the others are named in a warning."""
        attributes = payload.get("setContactAttributes")
        if not isinstance(attributes, dict):
            return payload
        good, bad = split_contact_attributes(attributes)
        if bad:
            logger.warning(
                "Conversation %s: contact attributes %s not set: attribute keys must match "
                "%s (letters, digits and _ only)%s",
                recipient_id,
                ", ".join(repr(k) for k in bad),
                ATTRIBUTE_KEY_PATTERN,
                f"; still setting {', '.join(sorted(good))}" if good else "",
            )
        return {**payload, "setContactAttributes": good}

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self._send_file(recipient_id, image, default_type="image/png")

    async def send_attachment(self, recipient_id: str, attachment: Any, **kwargs: Any) -> None:
        if isinstance(attachment, dict):
            payload = attachment.get("payload")
            url = attachment.get("url") or (
                payload.get("src") if isinstance(payload, dict) else None
            )
        else:
            url = attachment
        if not isinstance(url, str) or not url:
            logger.warning("Conversation %s: attachment without a URL ignored", recipient_id)
            return
        await self._send_file(recipient_id, url, default_type="application/octet-stream")

    async def _send_file(self, recipient_id: str, url: str, *, default_type: str) -> None:
        """Download, upload as an attachment, send by filename; the URL as text if any
        step fails."""
        if self.client is None:
            await self.send_text_message(recipient_id, url)
            return
        try:
            data, content_type = await self.client.fetch(
                url,
                max_bytes=self.settings.image_max_bytes,
                timeout=self.settings.image_timeout,
            )
            if not data:
                raise ValueError("empty file")
        except ValueError as e:
            logger.warning(
                "Conversation %s: could not fetch %s (%s); sending the link as text",
                recipient_id,
                url,
                e,
            )
            await self.send_text_message(recipient_id, url)
            return
        filename = attachment_filename(url, data, content_type)
        content_type = content_type or mimetypes.guess_type(filename)[0] or default_type
        outcome = await self.client.upload_attachment(recipient_id, filename, data, content_type)
        if outcome is Outcome.GONE:
            self.sink.rest.gone = True
            return
        if outcome is not Outcome.DELIVERED:
            logger.warning(
                "Conversation %s: upload of %s failed; sending the link as text",
                recipient_id,
                url,
            )
            await self.send_text_message(recipient_id, url)
            return
        await self.deliver(recipient_id, {"sendMessage": {"attachment": filename}})


#: Successor fields already warned about in this process (warned once each; later drops
#: are logged at debug level, so a classic bot that hands over with a note is not noisy).
_WITHHELD_WARNED: Set[str] = set()


def _warn_withheld(recipient_id: str, fields: List[str]) -> None:
    new = [f for f in fields if f not in _WITHHELD_WARNED]
    _WITHHELD_WARNED.update(new)
    logger.log(
        logging.WARNING if new else logging.DEBUG,
        "Conversation %s: %s not sent, because allow_successor_fields is off (classic "
        "Sparkcentral does not document these fields); set allow_successor_fields: true "
        "in credentials.yml if your inbox takes them (the default with platform: "
        "hootsuite)%s",
        recipient_id,
        ", ".join(fields),
        " [said once per field]" if new else "",
    )


def tags_for_rest(
    body: Dict[str, Any], message_id: Optional[str]
) -> Tuple[Dict[str, Any], List[str]]:
    """(``body`` as the REST API takes it, tag names dropped for want of a message id).

    Over REST ``applyTags`` is a list of ``{"messageId", "tag"}``: tag names (what a
    webhook answer takes, tagging the latest message) get ``message_id``."""
    tags = body.get("applyTags")
    if not tags:
        return body, []
    resolved: List[Dict[str, Any]] = []
    dropped: List[str] = []
    for tag in tags:
        if isinstance(tag, str):
            if message_id:
                resolved.append({"messageId": message_id, "tag": tag})
            else:
                dropped.append(tag)
        else:
            resolved.append(tag)
    body = dict(body)
    if resolved:
        body["applyTags"] = resolved
    else:
        del body["applyTags"]
    return body, dropped


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def attachment_filename(url: str, data: bytes, content_type: str) -> str:
    """A safe, unique-per-content filename for an upload (keeps the URL's name)."""
    path = unquote(urlparse(url).path)
    base = _SAFE.sub("-", posixpath.basename(path)).strip("-.") or "file"
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, (mimetypes.guess_extension(content_type or "") or "").lstrip(".")
    digest = hashlib.sha256(data).hexdigest()[:10]
    stem = stem[:80] or "file"
    return f"{stem}-{digest}.{ext}" if ext else f"{stem}-{digest}"


def _describe(body: Dict[str, Any]) -> str:
    parts = []
    message = body.get("sendMessage") or {}
    if message.get("text") is not None:
        parts.append(f"text of {len(message['text'])} chars")
    if message.get("attachment"):
        parts.append(f"attachment {message['attachment']}")
    if body.get("sendMessages"):
        parts.append(f"{len(body['sendMessages'])} messages")
    if body.get("applyTopics"):
        parts.append(f"topics {body['applyTopics']}")
    for name in ("applyTags", "applyConversationNotes", "setContactAttributes"):
        if body.get(name):
            parts.append(f"{name} ({len(body[name])})")
    if body.get("indicateTyping"):
        parts.append(f"typing {body['indicateTyping']}")
    if body.get("complete"):
        parts.append(f"complete {body['complete']}")
    return ", ".join(parts) or "empty action"
