"""The emulator's webhook sender: signed events POSTed to the bot, answers applied.

Sparkcentral's side of the webhook: it builds the envelope, signs the exact bytes, sends one
or several copies (to one URL or spread over several) and hands a non-empty answer to the
state machine. Everything sent is kept in ``webhook_deliveries``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import aiohttp

from rasa_sparkcentral.protocol import SIGNATURE_HEADER
from rasa_sparkcentral.signature import sign

from .contact import build_envelope, encode_envelope
from .events import EventBus
from .machine import ConversationMachine
from .models import EmulatorEvent, EmulatorSettings, JSONDict, WebhookResult


class WebhookSender:
    """Delivers webhook events to the bot (``deliver``) and records what came back."""

    def __init__(
        self, settings: EmulatorSettings, machine: ConversationMachine, bus: EventBus
    ) -> None:
        self.settings = settings
        self.machine = machine
        self.bus = bus
        self.webhook_deliveries: List[WebhookResult] = []
        self._session: Optional[aiohttp.ClientSession] = None

    def reset(self) -> None:
        self.webhook_deliveries.clear()

    async def close(self) -> None:
        """Close the HTTP client session (opened again on the next delivery)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(
        self,
        event_type: str,
        data: Optional[Mapping[str, Any]],
        *,
        idempotency_key: Optional[str] = None,
        raw_body: Optional[bytes] = None,
        signature: Optional[str] = None,
        sign: bool = True,
        headers: Optional[Mapping[str, str]] = None,
        copies: int = 1,
        concurrent: bool = False,
        url: Optional[str] = None,
        urls: Optional[Sequence[str]] = None,
    ) -> WebhookResult:
        """POST one signed event to the bot's webhook and apply a non-empty answer.

        The envelope is ``{timestamp, idempotencyKey, version: 1, type, data}`` as compact
        JSON, signed over the exact bytes. ``raw_body`` replaces the body (no envelope, no
        state change); ``signature`` replaces the signature header value; ``sign=False``
        sends no signature header; ``headers`` adds/overrides request headers.

        ``copies > 1`` sends the same bytes (same idempotencyKey) several times, one after
        the other or all at once (``concurrent``). The result of the first copy is returned;
        ``result.results`` holds every copy's result in sending order. ``urls`` spreads
        the copies over several webhook URLs in turn (copy ``i`` goes to
        ``urls[i % len(urls)]``), as a load balancer in front of several bot instances
        would; ``url`` (default ``webhook_url``) is used when it is not given.

        Assignment events (CONVERSATION_STARTED/DELEGATED) put the conversation in the
        "bot" queue (created if needed); INBOUND_MESSAGE_RECEIVED adds the contact's message
        to the transcript (creating an unknown conversation in the "bot" queue).
        """
        if copies < 1:
            raise ValueError("copies must be >= 1")
        payload: JSONDict = dict(data) if data is not None else {}
        conversation_id = payload.get("conversationId")
        cid = conversation_id if isinstance(conversation_id, str) else None
        if raw_body is None:
            envelope = build_envelope(event_type, payload, idempotency_key=idempotency_key)
            body = encode_envelope(envelope)
            key: Optional[str] = str(envelope["idempotencyKey"])
            self.machine.before_delivery(event_type, payload)
        else:
            body = raw_body
            key = idempotency_key
        send_headers: Dict[str, str] = {
            "Content-Type": "application/json",
            "User-Agent": "Sparkcentral-Emulator (rasa_sparkcentral)",
        }
        if signature is not None:
            send_headers[SIGNATURE_HEADER] = signature
        elif sign:
            send_headers[SIGNATURE_HEADER] = self.sign(body)
        if headers:
            send_headers.update(headers)
        targets = list(urls) if urls else [url or self.settings.webhook_url]

        async def one(copy: int) -> WebhookResult:
            target = targets[copy % len(targets)]
            return await self._post_webhook(target, body, send_headers, key, event_type, cid)

        if copies == 1:
            result = await one(0)
            result.results = [result]
            return result
        if concurrent:
            results = list(await asyncio.gather(*(one(i) for i in range(copies))))
        else:
            results = [await one(i) for i in range(copies)]
        first = results[0]
        first.results = results
        return first

    def sign(self, body: bytes) -> str:
        """The X-Sparkcentral-Signature of ``body`` under the shared secret."""
        return sign(self.settings.shared_key, body)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def _post_webhook(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        key: Optional[str],
        event_type: str,
        conversation_id: Optional[str],
    ) -> WebhookResult:
        started = time.perf_counter()
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        async with self._client().post(
            url, data=body, headers=dict(headers), timeout=timeout
        ) as response:
            raw = await response.read()
            status = response.status
            response_headers = dict(response.headers.items())
        elapsed = time.perf_counter() - started
        text = raw.decode("utf-8", "replace")
        parsed: Any = None
        if text.strip():
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        result = WebhookResult(
            status=status,
            json=parsed,
            text=text,
            elapsed=elapsed,
            idempotency_key=key,
            event_type=event_type,
            conversation_id=conversation_id,
            body=body,
            headers=response_headers,
        )
        self.machine.apply_webhook_answer(result)
        self.webhook_deliveries.append(result)
        self.settings.trim(self.webhook_deliveries)
        self.bus.emit(
            EmulatorEvent(
                kind="webhook",
                line=(
                    f"-> {event_type} {conversation_id or '-'}: {status} "
                    f"({elapsed * 1000:.0f} ms){' ' + text.strip() if text.strip() else ''}"
                ),
                conversation_id=conversation_id,
                result=result,
            )
        )
        return result
