"""``SparkcentralEmulator``: a local Sparkcentral speaking the Virtual Agent protocol.

The facade over the emulator's parts, with the public methods tests and tools use:

- ``machine.ConversationMachine``: conversations, queues, ownership, bot actions applied;
- ``http_api.SparkcentralApi``: what the bot calls (token, conversation and attachment
  endpoints), admin and asset routes, authentication, recording, the fault gate;
- ``webhooks.WebhookSender``: signed webhook events POSTed to ``webhook_url``;
- ``events.EventBus``: listeners, subscriptions (``emu.events.subscribe()``) and waits.

Only the standard library, aiohttp and ``rasa_sparkcentral.signature``/``protocol`` are
imported here.
"""

from __future__ import annotations

from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    overload,
)

from aiohttp import web

from rasa_sparkcentral.protocol import (
    ATTACHMENT_LIMIT_BYTES,
    DELEGATED_QUESTION_TIMEOUT,
    REPLY_TIMEOUT,
    SPARKCENTRAL,
    WEBHOOK_DEADLINE,
    WEBHOOK_PATH,
    WEBHOOK_RETRIES,
    WEBHOOK_RETRY_BACKOFF_MAX,
)

from .contact import (
    EVENT_CONVERSATION_STARTED,
    EVENT_INBOUND_MESSAGE_RECEIVED,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
    new_conversation_id,
    new_message_id,
)
from .events import EventBus, Listener
from .faults import FaultPlan
from .http_api import SparkcentralApi
from .inbox import add_inbox_routes
from .machine import ConversationMachine
from .models import (
    QUEUE_BOT,
    QUEUE_NEW,
    QUEUE_RESOLVED,
    Conversation,
    EmulatorSettings,
    EmulatorTimeout,
    JSONDict,
    RecordedCall,
    UnknownField,
    WebhookResult,
)
from .webhooks import WebhookSender

DEFAULT_CLIENT_ID = "emulator-client"
DEFAULT_CLIENT_SECRET = "emulator-secret"
DEFAULT_SHARED_SECRET = "5eca2a1c0ffee0ddba11ad5eed5a1ad0b5e55edf00d5ca1ab1ec0debabe5f00d"
DEFAULT_WEBHOOK_URL = f"http://127.0.0.1:5005{WEBHOOK_PATH}"

T = TypeVar("T")


class _Forward(Generic[T]):
    """An attribute of the facade that lives on one of its parts (read and write)."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Forward[T]: ...

    @overload
    def __get__(self, obj: SparkcentralEmulator, owner: type) -> T: ...

    def __get__(self, obj: Optional[SparkcentralEmulator], owner: type) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: SparkcentralEmulator, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class SparkcentralEmulator:
    """A local Sparkcentral for tests, benchmarks, demos and manual chats.

    Use ``await emu.start()`` / ``await emu.stop()`` or ``async with``. ``webhook_url`` is
    where the bot listens; it can be changed at any time.

    ``accept_extended_fields`` (default True) makes the successor inbox's
    ``sendMessages``/``setContactAttributes``/``indicateTyping`` known fields; with False
    they are treated like any unknown field (accepted, recorded in ``unknown_fields``, not
    applied), as classic Sparkcentral would. ``max_calls`` bounds ``calls`` and
    ``webhook_deliveries`` (oldest dropped) for long benchmarks.

    ``platform`` is "sparkcentral" (classic) or "hootsuite" (Inbox 2.0): token path and grant,
    API prefix and signature header follow it (``token_path``, ``api_prefix``,
    ``signature_header``); with "hootsuite" the successor fields are always known and every
    contact message repeats channel, contactProfile, medium and language. The published
    rules run on real timers: ``webhook_timeout``/``webhook_retries``/
    ``webhook_retry_backoff_max`` (a failing webhook is retried, then handed over),
    ``reply_timeout`` (a contact message the bot leaves unanswered) and
    ``delegated_question_timeout`` (no first question after CONVERSATION_DELEGATED).
    ``pretty_json`` sends every other webhook as indented JSON (signed as sent).
    """

    # settings (shared by every part)
    client_id: _Forward[str] = _Forward("settings")
    client_secret: _Forward[str] = _Forward("settings")
    shared_secret: _Forward[str] = _Forward("settings")
    webhook_url: _Forward[str] = _Forward("settings")
    token_lifetime: _Forward[float] = _Forward("settings")
    known_topics: _Forward[Optional[Set[str]]] = _Forward("settings")
    accept_extended_fields: _Forward[bool] = _Forward("settings")
    webhook_timeout: _Forward[float] = _Forward("settings")
    max_calls: _Forward[Optional[int]] = _Forward("settings")
    max_attachment_size: _Forward[int] = _Forward("settings")
    organization_id: _Forward[str] = _Forward("settings")
    reply_timeout: _Forward[float] = _Forward("settings")
    delegated_question_timeout: _Forward[float] = _Forward("settings")
    webhook_retries: _Forward[int] = _Forward("settings")
    webhook_retry_backoff_max: _Forward[float] = _Forward("settings")
    pretty_json: _Forward[bool] = _Forward("settings")
    # the HTTP API: fault gate, assets, recorded calls, counters
    faults: _Forward[FaultPlan] = _Forward("api")
    assets: _Forward[Dict[str, Tuple[str, bytes]]] = _Forward("api")
    calls: _Forward[List[RecordedCall]] = _Forward("api")
    token_requests: _Forward[int] = _Forward("api")
    connections_opened: _Forward[int] = _Forward("api")
    # the state machine
    conversations: _Forward[Dict[str, Conversation]] = _Forward("machine")
    unknown_fields: _Forward[List[UnknownField]] = _Forward("machine")
    webhook_answer_errors: _Forward[List[str]] = _Forward("machine")
    # the webhook sender
    webhook_deliveries: _Forward[List[WebhookResult]] = _Forward("sender")

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
        self.settings = EmulatorSettings(
            client_id=client_id,
            client_secret=client_secret,
            shared_secret=shared_secret,
            webhook_url=webhook_url,
            token_lifetime=token_lifetime,
            known_topics=known_topics,
            accept_extended_fields=accept_extended_fields,
            webhook_timeout=webhook_timeout,
            max_calls=max_calls,
            max_attachment_size=max_attachment_size,
            platform=platform,
            organization_id=organization_id,
            reply_timeout=reply_timeout,
            delegated_question_timeout=delegated_question_timeout,
            webhook_retries=webhook_retries,
            webhook_retry_backoff_max=webhook_retry_backoff_max,
            pretty_json=pretty_json,
        )
        self.events = EventBus()
        """Listeners and subscriptions: ``async with emu.events.subscribe() as events``."""
        self.machine = ConversationMachine(self.settings, self.events)
        self.api = SparkcentralApi(self.settings, self.machine, self.events)
        self.sender = WebhookSender(self.settings, self.machine, self.events)
        self._runner: Optional[web.AppRunner] = None
        self._base_url: Optional[str] = None
        self.app = self.api.build_app(self)
        add_inbox_routes(self.app, self)

    # ------------------------------------------------------------------ platform
    @property
    def platform(self) -> str:
        """ "sparkcentral" or "hootsuite" (fixed when the emulator is made)."""
        return self.settings.platform

    @property
    def extended_fields(self) -> bool:
        """Whether the successor fields are known (always on "hootsuite")."""
        return self.settings.extended_fields

    @property
    def signature_header(self) -> str:
        """The header webhooks are signed with on this platform."""
        return self.settings.api.signature_header

    @property
    def token_path(self) -> str:
        return self.settings.api.token_path

    @property
    def api_prefix(self) -> str:
        """Prefix of the conversation and attachment paths ("" or "/inbox/v1")."""
        return self.settings.api.api_prefix

    def conversation_path(self, conversation_id: str) -> str:
        return self.settings.api.conversation_path(conversation_id)

    # ------------------------------------------------------------------ lifecycle
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
        """Stop serving, stop the rule timers and close the webhook client session."""
        self.machine.cancel_timers()
        await self.sender.close()
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
        self.api.reset()
        self.machine.reset()
        self.sender.reset()
        self.events.notify()

    @property
    def connections_open(self) -> int:
        """TCP connections to the emulator that are open right now."""
        return self.api.connections_open

    # ------------------------------------------------------------------ listeners / waiting
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every served call, transcript entry and webhook."""
        self.events.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.events.remove_listener(listener)

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
        if not await self.events.wait_until(predicate, timeout):
            what = description or getattr(predicate, "__name__", "a condition")
            raise EmulatorTimeout(
                f"timed out after {timeout:g}s waiting for {what}\n"
                f"--- transcript ---\n{self.transcript_text(conversation_id)}"
            )

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
        return self.machine.conversation(conversation_id)

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
        return self.machine.bot_texts(conversation_id)

    def calls_to(self, path_prefix: str, method: Optional[str] = None) -> List[RecordedCall]:
        return [
            c
            for c in self.calls
            if c.path.startswith(path_prefix) and (method is None or c.method == method)
        ]

    @property
    def rest_calls(self) -> List[RecordedCall]:
        """Conversation and attachment calls (token requests excluded)."""
        return self.calls_to(f"{self.api_prefix}/virtual-agent/conversations/")

    def transcript_text(self, conversation_id: Optional[str] = None) -> str:
        """Human-readable transcript of one conversation, or of all of them."""
        return self.machine.transcript_text(conversation_id)

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
            bot_messages += sum(len(self.machine.messages(a.body)) for a in conv.actions)
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
        if language:
            data["language"] = language
        return await self.deliver(event_type, data)

    async def contact_says(
        self,
        conversation_id: str,
        text: Optional[str] = None,
        *,
        payload: Optional[str] = None,
        trigger: Optional[Mapping[str, Any]] = None,
        topics: Optional[Sequence[str]] = None,
        force: bool = False,
    ) -> WebhookResult:
        """The contact writes. Sent to the bot only while the bot has the conversation.

        ``payload`` is the payload of a quick reply or postback button the contact pressed,
        ``trigger`` what the message answers (``{"type": "STORY", "action": "REPLY"}``),
        ``topics`` the ``conversationTopics``. Every message gets a ``messageId``
        (``result.message_id``). On "hootsuite" the message repeats the conversation's
        channel, contactProfile, medium and language.

        When a human agent has it (queue "new") or it is resolved, the message lands in the
        transcript and no webhook is sent (``result.delivered`` is False, status 0), unless
        ``force`` is True.
        """
        conv = self.conversation(conversation_id)
        if conv.queue != QUEUE_BOT and not force:
            self.machine.contact_writes_to_people(conv, text)
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
        message: JSONDict = {"messageId": new_message_id()}
        if text is not None:
            message["text"] = text
        if payload is not None:
            message["payload"] = payload
        data: JSONDict = {"conversationId": conversation_id, "message": message}
        if trigger is not None:
            data["trigger"] = dict(trigger)
        if topics is not None:
            data["conversationTopics"] = list(topics)
        if self.platform != SPARKCENTRAL:
            started = conv.started_data()
            for name in ("channel", "contactProfile", "medium", "language"):
                if name in started:
                    data[name] = started[name]
        result = await self.deliver(EVENT_INBOUND_MESSAGE_RECEIVED, data)
        result.message_id = message["messageId"]
        return result

    async def hand_back(
        self, conversation_id: str, event_type: str = EVENT_CONVERSATION_STARTED
    ) -> WebhookResult:
        """A human agent gives the conversation back to the bot (queue -> "bot")."""
        conv = self.conversation(conversation_id)
        return await self.deliver(event_type, conv.started_data())

    def agent_says(self, conversation_id: str, text: str) -> None:
        """A human agent replies to the contact (transcript only; the bot is not told)."""
        self.machine.agent_says(conversation_id, text)

    def agent_resolves(self, conversation_id: str) -> None:
        """A human agent resolves the conversation (the bot is not told)."""
        self.machine.agent_resolves(conversation_id)

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
        return await self.sender.deliver(
            event_type,
            data,
            idempotency_key=idempotency_key,
            raw_body=raw_body,
            signature=signature,
            sign=sign,
            headers=headers,
            copies=copies,
            concurrent=concurrent,
            url=url,
            urls=urls,
        )

    def sign(self, body: bytes) -> str:
        """The signature (``signature_header``) of ``body`` under the shared secret."""
        return self.sender.sign(body)
