"""The bot's replies, as Sparkcentral conversation actions (``SparkcentralOutput``)."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import posixpath
import re
from typing import Any, Dict, Iterable, List, Optional, Protocol
from urllib.parse import unquote, urlparse

from rasa.core.channels.channel import OutputChannel

from rasa_sparkcentral import buttons as button_list
from rasa_sparkcentral.client import Outcome, SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import (
    ACTION_FIELDS,
    CHANNEL_NAME,
    SUCCESSOR_FIELDS,
    action_from_custom,
)
from rasa_sparkcentral.state import ChannelState

logger = logging.getLogger(__name__)


class RestSink:
    """Sends each conversation action over Sparkcentral's REST API as it comes, and stops
    once Sparkcentral says the conversation is no longer the bot's."""

    def __init__(self, client: Optional[SparkcentralClient]) -> None:
        self.client = client
        self.outcomes: List[Outcome] = []
        self.gone = False

    @property
    def rest(self) -> RestSink:
        return self

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
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
    ) -> None:
        self.client = client
        self.state = state
        self.settings = settings
        self.sink: Sink = sink if sink is not None else RestSink(client)

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    async def deliver(self, recipient_id: str, body: Dict[str, Any]) -> None:
        """Write one conversation action to the sink."""
        if body:
            await self.sink.put(recipient_id, body)

    # -- Rasa's send_* API -------------------------------------------------------------

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        """Like Rasa's, plus protocol fields given at the top level of a message
        (``utter_message(complete="HANDOVER")``, or keys of a domain response)."""
        message = dict(message)
        extra = {k: message.pop(k) for k in ACTION_FIELDS + SUCCESSOR_FIELDS if k in message}
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
        try:
            body = action_from_custom(
                payload, allow_successor_fields=self.settings.allow_successor_fields
            )
        except ValueError as e:
            logger.warning("Conversation %s: custom payload ignored: %s", recipient_id, e)
            return
        ignored = sorted(set(payload) - set(body))
        if ignored:
            logger.warning(
                "Conversation %s: custom payload fields %s are not sent to Sparkcentral "
                "(allowed: %s%s)",
                recipient_id,
                ", ".join(ignored),
                ", ".join(ACTION_FIELDS),
                ""
                if self.settings.allow_successor_fields
                else "; setContactAttributes, indicateTyping and sendMessages need "
                "allow_successor_fields: true",
            )
        await self.deliver(recipient_id, body)

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
    if body.get("applyTopics"):
        parts.append(f"topics {body['applyTopics']}")
    if body.get("complete"):
        parts.append(f"complete {body['complete']}")
    return ", ".join(parts) or "empty action"
