"""``SparkcentralEmulator``: a local Sparkcentral speaking the Virtual Agent protocol.

Server side (what the bot calls): the OAuth2 token endpoint, the conversation endpoint, the
attachment endpoint, and admin endpoints under ``/_emulator/``. Contact side (what the bot
receives): signed webhook events POSTed to ``webhook_url``. Everything is recorded.

Only the standard library, aiohttp and ``rasa_sparkcentral.signature`` are imported here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import secrets
import time
import weakref
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
)
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from rasa_sparkcentral.signature import SIGNATURE_HEADER, decode_secret, sign

from .admin import add_admin_routes
from .assets import add_asset_routes, default_assets
from .contact import (
    ASSIGNMENT_EVENTS,
    EVENT_CONVERSATION_STARTED,
    EVENT_INBOUND_MESSAGE_RECEIVED,
    build_envelope,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
    encode_envelope,
    new_conversation_id,
)
from .faults import Fault, FaultPlan, next_token_sequence
from .inbox import add_inbox_routes
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
    EmulatorTimeout,
    JSONDict,
    RecordedCall,
    TranscriptEntry,
    UnknownField,
    WebhookResult,
    _messages_of,
)

logger = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "emulator-client"
DEFAULT_CLIENT_SECRET = "emulator-secret"
DEFAULT_SHARED_SECRET = "5eca2a1c0ffee0ddba11ad5eed5a1ad0b5e55edf00d5ca1ab1ec0debabe5f00d"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:5005/webhooks/sparkcentral/webhook"

TOKEN_PATH = "/virtual-agent/oauth2/token"
CONVERSATION_PATH = "/virtual-agent/conversations/{conversationId}"
ATTACHMENT_PATH = "/virtual-agent/conversations/{conversationId}/attachments/{filename}"
ADMIN_PREFIX = "/_emulator/"

COMPLETE_VALUES = ("HANDOVER", "RESOLVED")
TYPING_VALUES = ("START", "STOP")
CLASSIC_FIELDS = ("sendMessage", "applyTopics", "complete")
EXTENDED_FIELDS = ("sendMessages", "setContactAttributes", "indicateTyping")
MESSAGE_FIELDS = ("text", "attachment")

Listener = Callable[[EmulatorEvent], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SparkcentralEmulator:
    """A local Sparkcentral for tests, benchmarks, demos and manual chats.

    Use ``await emu.start()`` / ``await emu.stop()`` or ``async with``. ``webhook_url`` is
    where the bot listens; it can be changed at any time.

    ``accept_extended_fields`` (default True) makes the successor inbox's
    ``sendMessages``/``setContactAttributes``/``indicateTyping`` known fields; with False
    they are treated like any unknown field (accepted, recorded in ``unknown_fields``, not
    applied), as classic Sparkcentral would. ``max_calls`` bounds ``calls`` and
    ``webhook_deliveries`` (oldest dropped) for long benchmarks.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        shared_secret: str = DEFAULT_SHARED_SECRET,
        webhook_url: str = DEFAULT_WEBHOOK_URL,
        token_lifetime: float = 3600.0,
        known_topics: Optional[Iterable[str]] = None,
        accept_extended_fields: bool = True,
        webhook_timeout: float = 30.0,
        max_calls: Optional[int] = None,
        max_attachment_size: int = 25 * 1024 * 1024,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self._shared_key = decode_secret(shared_secret)
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

        self.faults = FaultPlan()
        self.assets: Dict[str, Tuple[str, bytes]] = default_assets()
        """Files served under /_emulator/assets/{name} (see emulator.assets)."""
        self.calls: List[RecordedCall] = []
        self.conversations: Dict[str, Conversation] = {}
        self.unknown_fields: List[UnknownField] = []
        self.webhook_deliveries: List[WebhookResult] = []
        self.webhook_answer_errors: List[str] = []
        self.token_requests = 0
        """Tokens successfully issued."""
        self.connections_opened = 0
        """TCP connections that carried a request to the emulator (for connection-reuse
        checks): counted when a connection's first request arrives."""

        self._connections: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

        self._tokens: Dict[str, Tuple[float, int]] = {}
        self._listeners: List[Listener] = []
        self._waiters: Set[asyncio.Future[None]] = set()
        self._runner: Optional[web.AppRunner] = None
        self._base_url: Optional[str] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle
    @property
    def shared_secret(self) -> str:
        return self._shared_secret

    @shared_secret.setter
    def shared_secret(self, value: str) -> None:
        self._shared_key = decode_secret(value)
        self._shared_secret = value

    @property
    def base_url(self) -> str:
        """``http://host:port`` once started (the REST base URL to give the connector)."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started; await emu.start() first")
        return self._base_url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port) and return the base URL."""
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        bound_port = int(bound[1])
        # With port 0 a host name may bind one free port per address family: name the
        # address actually bound so that the URL reaches this socket.
        url_host = str(bound[0]) if port == 0 else host
        if url_host in ("", "0.0.0.0"):
            url_host = "127.0.0.1"
        elif url_host == "::":
            url_host = "::1"
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self._base_url = f"http://{url_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Stop serving and close the webhook client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._base_url = None

    async def __aenter__(self) -> SparkcentralEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.stop()

    def reset(self) -> None:
        """Forget every record and conversation and install a fresh FaultPlan.

        Issued tokens stay valid, so a connector's cached token keeps working.
        """
        self.calls.clear()
        self.conversations.clear()
        self.unknown_fields.clear()
        self.webhook_deliveries.clear()
        self.webhook_answer_errors.clear()
        self.token_requests = 0
        self.connections_opened = 0  # connections open now are not counted again
        cutoff = self.faults.token_cutoff
        self.faults = FaultPlan()
        self.faults.token_cutoff = cutoff
        self._notify()

    @property
    def connections_open(self) -> int:
        """TCP connections to the emulator that are open right now."""
        return sum(1 for transport in list(self._connections) if not transport.is_closing())

    def _count_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None and transport not in self._connections:
            self._connections.add(transport)
            self.connections_opened += 1

    # ------------------------------------------------------------------ listeners / waiting
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every served call, transcript entry and webhook."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _emit(self, event: EmulatorEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break the server
                logger.exception("emulator listener failed")

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 30.0,
        *,
        description: Optional[str] = None,
        conversation_id: Optional[str] = None,
    ) -> None:
        """Wait until ``predicate()`` is true (re-checked on every change and every 0.25 s).

        Raises ``EmulatorTimeout`` (an AssertionError and an asyncio.TimeoutError) carrying
        the transcript.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                what = description or getattr(predicate, "__name__", "a condition")
                raise EmulatorTimeout(
                    f"timed out after {timeout:g}s waiting for {what}\n"
                    f"--- transcript ---\n{self.transcript_text(conversation_id)}"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiters.discard(waiter)

    async def wait_for_bot_messages(
        self, conversation_id: str, count: int, timeout: float = 30.0
    ) -> List[str]:
        """Wait until the bot sent at least ``count`` texts there; return all its texts."""
        await self.wait_for(
            lambda: len(self.bot_texts(conversation_id)) >= count,
            timeout,
            description=f"{count} bot message(s) in {conversation_id}",
            conversation_id=conversation_id,
        )
        return self.bot_texts(conversation_id)

    async def wait_for_queue(self, conversation_id: str, queue: str, timeout: float = 30.0) -> None:
        """Wait until the conversation is in ``queue`` ("bot", "new" or "resolved")."""

        def in_queue() -> bool:
            conv = self.conversations.get(conversation_id)
            return conv is not None and conv.queue == queue

        await self.wait_for(
            in_queue,
            timeout,
            description=f"{conversation_id} in the {queue!r} queue",
            conversation_id=conversation_id,
        )

    # ------------------------------------------------------------------ queries
    def conversation(self, conversation_id: str) -> Conversation:
        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise KeyError(f"unknown conversation {conversation_id!r}") from None

    def actions_for(self, conversation_id: str) -> List[JSONDict]:
        """Bodies of accepted bot actions (REST and non-empty webhook answers), in order."""
        conv = self.conversations.get(conversation_id)
        return [] if conv is None else [a.body for a in conv.actions]

    def rest_actions_for(self, conversation_id: str) -> List[JSONDict]:
        conv = self.conversations.get(conversation_id)
        return [] if conv is None else [a.body for a in conv.actions if a.via == "rest"]

    def webhook_answers_for(self, conversation_id: str) -> List[JSONDict]:
        conv = self.conversations.get(conversation_id)
        return [] if conv is None else [a.body for a in conv.actions if a.via == "webhook"]

    def bot_texts(self, conversation_id: str) -> List[str]:
        """Texts the bot sent (``sendMessage.text`` and ``sendMessages[].text``), in order."""
        conv = self.conversations.get(conversation_id)
        return [] if conv is None else conv.bot_texts(self.accept_extended_fields)

    def calls_to(self, path_prefix: str, method: Optional[str] = None) -> List[RecordedCall]:
        return [
            c
            for c in self.calls
            if c.path.startswith(path_prefix) and (method is None or c.method == method)
        ]

    @property
    def rest_calls(self) -> List[RecordedCall]:
        """Conversation and attachment calls (token requests excluded)."""
        return self.calls_to("/virtual-agent/conversations/")

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

    def stats(self) -> JSONDict:
        by_status: Dict[str, int] = {}
        for call in self.calls:
            by_status[str(call.status)] = by_status.get(str(call.status), 0) + 1
        queues = {QUEUE_BOT: 0, QUEUE_NEW: 0, QUEUE_RESOLVED: 0}
        bot_messages = 0
        actions = 0
        for conv in self.conversations.values():
            queues[conv.queue] = queues.get(conv.queue, 0) + 1
            actions += len(conv.actions)
            bot_messages += sum(len(self._messages(a.body)) for a in conv.actions)
        return {
            "tokenRequests": self.token_requests,
            "calls": len(self.calls),
            "callsByStatus": by_status,
            "restCalls": len(self.rest_calls),
            "conversations": len(self.conversations),
            "queues": queues,
            "actions": actions,
            "botMessages": bot_messages,
            "webhookDeliveries": len(self.webhook_deliveries),
            "webhookAnswerErrors": len(self.webhook_answer_errors),
            "unknownFields": len(self.unknown_fields),
            "faultsInjected": self.faults.injected,
        }

    # ------------------------------------------------------------------ contact side
    async def start_conversation(
        self,
        conversation_id: Optional[str] = None,
        *,
        contact_profile: Optional[Mapping[str, Any]] = None,
        contact_attributes: Optional[List[JSONDict]] = None,
        medium: str = "smooch-rtm",
        channel: Optional[Mapping[str, Any]] = None,
        event_type: str = EVENT_CONVERSATION_STARTED,
        name: str = "Johan",
        vip: bool = False,
        language: Optional[str] = "en-GB",
    ) -> WebhookResult:
        """Assign a (new) conversation to the bot and send CONVERSATION_STARTED.

        ``name``/``vip``/``language`` shape the default profile and attributes when
        ``contact_profile``/``contact_attributes`` are not given.
        """
        cid = conversation_id or new_conversation_id()
        profile = (
            dict(contact_profile)
            if contact_profile is not None
            else default_contact_profile(name, vip=vip)
        )
        attributes = (
            [dict(a) for a in contact_attributes]
            if contact_attributes is not None
            else default_contact_attributes(medium, language)
        )
        data: JSONDict = {
            "conversationId": cid,
            "contactProfile": profile,
            "contactAttributes": attributes,
            "medium": {"id": medium},
            "channel": dict(channel) if channel is not None else default_channel(),
        }
        return await self.deliver(event_type, data)

    async def contact_says(
        self, conversation_id: str, text: Optional[str], *, force: bool = False
    ) -> WebhookResult:
        """The contact writes. Sent to the bot only while the bot has the conversation.

        When a human agent has it (queue "new") or it is resolved, the message lands in the
        transcript and no webhook is sent (``result.delivered`` is False, status 0), unless
        ``force`` is True.
        """
        conv = self.conversation(conversation_id)
        if conv.queue != QUEUE_BOT and not force:
            self._add_entry(conv, TranscriptEntry(sender=SENDER_CONTACT, text=text))
            return WebhookResult(
                status=0,
                json=None,
                text="",
                elapsed=0.0,
                idempotency_key=None,
                event_type=EVENT_INBOUND_MESSAGE_RECEIVED,
                conversation_id=conversation_id,
                delivered=False,
                error=f"conversation is in the {conv.queue!r} queue; the bot is not notified",
            )
        message: JSONDict = {} if text is None else {"text": text}
        return await self.deliver(
            EVENT_INBOUND_MESSAGE_RECEIVED,
            {"conversationId": conversation_id, "message": message},
        )

    async def hand_back(
        self, conversation_id: str, event_type: str = EVENT_CONVERSATION_STARTED
    ) -> WebhookResult:
        """A human agent gives the conversation back to the bot (queue -> "bot")."""
        conv = self.conversation(conversation_id)
        return await self.deliver(event_type, conv.started_data())

    def agent_says(self, conversation_id: str, text: str) -> None:
        """A human agent replies to the contact (transcript only; the bot is not told)."""
        conv = self.conversation(conversation_id)
        self._add_entry(conv, TranscriptEntry(sender=SENDER_AGENT, text=text))

    def agent_resolves(self, conversation_id: str) -> None:
        """A human agent resolves the conversation (queue -> "resolved"; the bot is not told)."""
        conv = self.conversation(conversation_id)
        conv.queue = QUEUE_RESOLVED
        conv.typing = None
        self._add_entry(conv, _system("[RESOLVED by the agent -> conversation closed]"))

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
            self._before_delivery(event_type, payload)
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
        targets = list(urls) if urls else [url or self.webhook_url]

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
        return sign(self._shared_key, body)

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
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
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
        self._apply_webhook_answer(result)
        self.webhook_deliveries.append(result)
        self._trim(self.webhook_deliveries)
        self._emit(
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
        self._notify()
        return result

    def _before_delivery(self, event_type: str, data: JSONDict) -> None:
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
            self._add_entry(
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
            self._add_entry(
                conv,
                TranscriptEntry(
                    sender=SENDER_CONTACT, text=text if isinstance(text, str) else None
                ),
            )

    def _apply_webhook_answer(self, result: WebhookResult) -> None:
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
                result.error = self._validate(conv, result.json)
                if result.error is None:
                    self._apply(conv, result.json, via="webhook")
                    result.applied = True
        if result.error is not None:
            self.webhook_answer_errors.append(f"{where}: {result.error}")
            self._trim(self.webhook_answer_errors)

    # ------------------------------------------------------------------ actions
    def _validate(self, conv: Conversation, payload: JSONDict) -> Optional[str]:
        known = self._known_fields()
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

    def _known_fields(self) -> Tuple[str, ...]:
        if self.accept_extended_fields:
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

    def _apply(self, conv: Conversation, payload: JSONDict, via: str) -> None:
        conv.actions.append(BotAction(body=payload, via=via))
        known = self._known_fields()
        for name, value in payload.items():
            if name not in known:
                self.unknown_fields.append(UnknownField(conv.id, name, value, via))
        for message in self._messages(payload):
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
            self._add_entry(
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
        extended = self.accept_extended_fields
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
            self._add_entry(conv, _system(f"[contact attributes: {shown}]", via))
        typing = payload.get("indicateTyping") if extended else None
        if isinstance(typing, str):
            conv.typing = typing
        topics = payload.get("applyTopics")
        if isinstance(topics, list):
            applied = [t for t in topics if self.known_topics is None or t in self.known_topics]
            ignored = [t for t in topics if t not in applied]
            conv.topics.update(applied)
            conv.ignored_topics.extend(ignored)
            line = f"[topics: {', '.join(applied)}]"
            if ignored:
                line += f" (ignored unknown: {', '.join(ignored)})"
            self._add_entry(conv, _system(line, via))
        complete = payload.get("complete")
        if complete == "HANDOVER":
            conv.queue = QUEUE_NEW
            conv.typing = None
            self._add_entry(conv, _system("[HANDOVER -> new queue]", via))
        elif complete == "RESOLVED":
            conv.queue = QUEUE_RESOLVED
            conv.typing = None
            self._add_entry(conv, _system("[RESOLVED -> conversation closed]", via))
        self._notify()

    def _messages(self, payload: JSONDict) -> List[JSONDict]:
        return _messages_of(payload, self.accept_extended_fields)

    def _add_entry(self, conv: Conversation, entry: TranscriptEntry) -> None:
        conv.transcript.append(entry)
        self._emit(
            EmulatorEvent(
                kind="transcript",
                line=f"[{conv.id}] {entry.render()}",
                conversation_id=conv.id,
                entry=entry,
            )
        )
        self._notify()

    def _trim(self, records: List[Any]) -> None:
        limit = self.max_calls
        if limit is not None and len(records) > limit + max(limit // 10, 1):
            del records[: len(records) - limit]

    # ------------------------------------------------------------------ HTTP server
    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._recording_middleware()],
            client_max_size=max(self.max_attachment_size, 1024 * 1024) + 1,
        )
        app.router.add_post(TOKEN_PATH, self._handle_token)
        app.router.add_post(CONVERSATION_PATH, self._handle_conversation)
        app.router.add_put(ATTACHMENT_PATH, self._handle_attachment)
        add_admin_routes(app, self)
        add_asset_routes(app, self)
        add_inbox_routes(app, self)
        return app

    def _recording_middleware(self) -> Any:
        emulator = self

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            status = 500
            response_json: Any = None
            body = b""
            emulator._count_connection(request)
            try:
                body = await request.read()
                response = await handler(request)
                status = response.status
                if isinstance(response, web.Response) and isinstance(response.body, bytes):
                    response_json = _parse_json(response.body)
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if not request.path.startswith(ADMIN_PREFIX):
                    emulator._record_call(request, body, status, response_json)

        return record

    def _record_call(
        self, request: web.Request, body: bytes, status: int, response_json: Any
    ) -> None:
        call = RecordedCall(
            method=request.method,
            path=request.path,
            headers=dict(request.headers.items()),
            body=body,
            json=_parse_json(body) if body else None,
            status=status,
            at=time.monotonic(),
            query=dict(request.query.items()),
            response_json=response_json,
            fault=request.get("fault"),
        )
        self.calls.append(call)
        self._trim(self.calls)
        self._emit(
            EmulatorEvent(
                kind="call",
                line=f"<- {call.method} {call.path}: {status}"
                + (f" (fault: {call.fault})" if call.fault else ""),
                conversation_id=call.conversation_id,
                call=call,
            )
        )
        self._notify()

    @staticmethod
    def _fault_response(request: web.Request, fault: Fault) -> web.Response:
        request["fault"] = fault.kind
        return web.json_response(fault.body(), status=fault.status, headers=fault.headers())

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        if self.faults.token_delay > 0:
            await asyncio.sleep(self.faults.token_delay)
        fault = self.faults.take_token_fault()
        if fault is not None:
            return self._fault_response(request, fault)
        if not self._basic_auth_ok(request.headers.get("Authorization")):
            return web.json_response(
                {"error": "invalid_client"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="sparkcentral"'},
            )
        form = parse_qs((await request.read()).decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        if grant != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        if len(self._tokens) >= 256:
            self._tokens = {
                t: (exp, seq)
                for t, (exp, seq) in self._tokens.items()
                if exp > now and self.faults.token_valid(seq)
            }
        self._tokens[token] = (now + self.token_lifetime, next_token_sequence())
        self.token_requests += 1
        self._emit(EmulatorEvent(kind="token", line=f"token issued ({self.token_requests})"))
        answer: JSONDict = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.token_lifetime),
        }
        scope = form.get("scope")
        if scope:
            answer["scope"] = scope[0]
        return web.json_response(
            answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
        )

    def _basic_auth_ok(self, header: Optional[str]) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return False
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        return id_ok and secret_ok

    def _bearer_ok(self, header: Optional[str]) -> bool:
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        issued = self._tokens.get(token.strip())
        if issued is None:
            return False
        expires_at, sequence = issued
        return time.monotonic() < expires_at and self.faults.token_valid(sequence)

    async def _rest_gate(
        self, request: web.Request
    ) -> Tuple[Optional[Conversation], Optional[web.Response]]:
        """Delay, faults, Bearer token, then the conversation must be with the bot."""
        if self.faults.delay > 0:
            await asyncio.sleep(self.faults.delay)
        fault = self.faults.take_rest_fault()
        if fault is not None:
            return None, self._fault_response(request, fault)
        if not self._bearer_ok(request.headers.get("Authorization")):
            return None, web.json_response(
                {"error": "invalid_token", "message": "missing, unknown or expired token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        cid = request.match_info["conversationId"]
        conv = self.conversations.get(cid)
        if conv is None or conv.queue != QUEUE_BOT:
            where = "unknown" if conv is None else f"in the {conv.queue!r} queue"
            return None, web.json_response(
                {
                    "error": "not_found",
                    "message": f"conversation {cid} is not assigned to this virtual agent "
                    f"({where})",
                },
                status=404,
            )
        return conv, None

    async def _handle_conversation(self, request: web.Request) -> web.StreamResponse:
        conv, refusal = await self._rest_gate(request)
        if refusal is not None or conv is None:
            assert refusal is not None
            return refusal
        payload = _parse_json(await request.read())
        if not isinstance(payload, dict):
            return web.json_response(
                {"error": "bad_request", "message": "the body must be a JSON object"},
                status=400,
            )
        error = self._validate(conv, payload)
        if error is not None:
            return web.json_response({"error": "bad_request", "message": error}, status=400)
        self._apply(conv, payload, via="rest")
        return web.json_response({})

    async def _handle_attachment(self, request: web.Request) -> web.StreamResponse:
        conv, refusal = await self._rest_gate(request)
        if refusal is not None or conv is None:
            assert refusal is not None
            return refusal
        filename = request.match_info["filename"]
        content_type = request.headers.get("Content-Type", "").strip()
        body = await request.read()

        def bad(message: str, status: int = 400) -> web.Response:
            return web.json_response({"error": "bad_request", "message": message}, status=status)

        if not content_type:
            return bad("a Content-Type header is required")
        if request.content_length is None:
            return bad("a Content-Length header is required", 411)
        if not body:
            return bad("the attachment is empty")
        if request.content_length != len(body):
            return bad(
                f"Content-Length {request.content_length} does not match the body "
                f"({len(body)} bytes)"
            )
        if len(body) > self.max_attachment_size:
            return bad(f"attachment larger than {self.max_attachment_size} bytes", 413)
        conv.attachments[filename] = (content_type, body)
        self._notify()
        return web.json_response({})


def _system(text: str, via: Optional[str] = None) -> TranscriptEntry:
    return TranscriptEntry(sender=SENDER_SYSTEM, text=text, via=via)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _validate_str_list(value: Any, name: str) -> Optional[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f"{name} must be a list of strings"
    return None
