"""The emulator's webhook sender: signed events POSTed to the bot, answers applied.

Sparkcentral's side of the webhook: it builds the envelope, signs the exact bytes (with the
platform's signature header), sends one or several copies (to one URL or spread over several)
and hands a non-empty answer to the state machine. Every answer is kept in
``webhook_deliveries``.

The published rule: a delivery not answered 200 within ``webhook_timeout``, or answered with
an error, is sent again ``webhook_retries`` times with the same bytes (same idempotencyKey),
waiting ``webhook_retry_backoff_max / 2**(retries - n)`` before retry n (0.5, 1, 2 s by
default); when every try failed the conversation goes to the New queue. A bot that cannot be
reached at all (connection refused) is neither a timeout nor an answer: the error is raised
at once and the conversation stays with the bot, so that a test sees the broken setup.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import aiohttp

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
        self._sent = 0

    def reset(self) -> None:
        self.webhook_deliveries.clear()
        self._sent = 0

    @property
    def signature_header(self) -> str:
        return self.settings.api.signature_header

    def retry_delays(self) -> List[float]:
        """Waits before each retry: exponential, the last one ``webhook_retry_backoff_max``."""
        retries = self.settings.webhook_retries
        top = self.settings.webhook_retry_backoff_max
        return [top / 2 ** (retries - n) for n in range(1, retries + 1)]

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
            # pretty_json: every other webhook (the first included) as indented JSON
            pretty = self.settings.pretty_json and self._sent % 2 == 0
            self._sent += 1
            body = encode_envelope(envelope, pretty=pretty)
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
            send_headers[self.signature_header] = signature
        elif sign:
            send_headers[self.signature_header] = self.sign(body)
        if headers:
            send_headers.update(headers)
        targets = list(urls) if urls else [url or self.settings.webhook_url]

        async def one(copy: int) -> WebhookResult:
            target = targets[copy % len(targets)]
            return await self._post_webhook(target, body, send_headers, key, event_type, cid)

        # A delivery crafted by a test (own body, signature, copies) is sent as asked;
        # the emulator's own events follow the platform's retry rule.
        retried = raw_body is None and signature is None and sign and copies == 1
        if retried:
            result = await self._with_retries(targets[0], body, send_headers, key, event_type, cid)
            result.results = [result]
            return result
        if copies == 1:
            result = await one(0)
            result.results = [result]
            result.attempts = [_attempt(result.status, result.elapsed, None)]
            return result
        if concurrent:
            results = list(await asyncio.gather(*(one(i) for i in range(copies))))
        else:
            results = [await one(i) for i in range(copies)]
        first = results[0]
        first.results = results
        return first

    async def _with_retries(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        key: Optional[str],
        event_type: str,
        cid: Optional[str],
    ) -> WebhookResult:
        attempts: List[JSONDict] = []
        delays = self.retry_delays()
        for tried in range(len(delays) + 1):
            if tried:
                await asyncio.sleep(delays[tried - 1])
            started = time.perf_counter()
            try:
                result = await self._post_webhook(url, body, headers, key, event_type, cid)
            except asyncio.TimeoutError:
                elapsed = time.perf_counter() - started
                error = f"no answer within {self.settings.webhook_timeout:g}s"
                result = WebhookResult(
                    status=0,
                    json=None,
                    text="",
                    elapsed=elapsed,
                    idempotency_key=key,
                    event_type=event_type,
                    conversation_id=cid,
                    body=body,
                    error=error,
                )
            attempts.append(_attempt(result.status, result.elapsed, result.error))
            if result.status == 200:
                result.attempts = attempts
                return result
        result.attempts = attempts
        self.machine.webhook_failed(cid, len(attempts))
        return result

    def sign(self, body: bytes) -> str:
        """The signature header value of ``body`` under the shared secret."""
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


def _attempt(status: int, elapsed: float, error: Optional[str]) -> JSONDict:
    return {"status": status, "elapsed": elapsed, "error": error}
