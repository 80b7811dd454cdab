"""The Rasa input channel: Sparkcentral's Virtual Agent webhook (``SparkcentralInput``).

Rasa's channel API, the routes and dispatch; each step has its own room:
webhook → ``screening`` (size, signature, shape) → ``journal`` (recorded before the 200;
503 when it cannot be) → ``ordering`` (per conversation, in acceptance order, by leases)
→ ``inbound`` (the UserMessages) → Rasa → ``output`` → ``outbox`` → ``sender`` (REST,
retried until the reply deadline), or ``webhook_answer`` in reply mode "webhook".
``state`` keeps the contact's details and the buttons shown; ``webhook_thread`` serves
the webhook on ``webhook_port`` too. ``recovery`` replays what a crash left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Tuple

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_sparkcentral.client import SparkcentralClient
from rasa_sparkcentral.config import ConfigError, Settings
from rasa_sparkcentral.inbound import (
    Inbound,
    channel_details,
    message_metadata,
    session_is_live,
    shown_buttons,
)
from rasa_sparkcentral.journal import (
    Accepted,
    Entry,
    Instance,
    Journal,
    JournalUnavailable,
    make_journal,
)
from rasa_sparkcentral.ordering import Ordering
from rasa_sparkcentral.outbox import Outbox, make_outbox
from rasa_sparkcentral.output import RestSink, Sink, SparkcentralOutput
from rasa_sparkcentral.protocol import (
    CHANNEL_NAME,
    Event,
    ProtocolError,
    parse_event,
)
from rasa_sparkcentral.recovery import OutboxSink, already_handled
from rasa_sparkcentral.screening import screen
from rasa_sparkcentral.sender import ReplySender
from rasa_sparkcentral.signature import signature_of
from rasa_sparkcentral.state import ChannelState, make_state
from rasa_sparkcentral.webhook_answer import WebhookAnswer
from rasa_sparkcentral.webhook_thread import WebhookThread

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
Answer = Tuple[int, Dict[str, Any]]
#: While the outbox cannot take a turn's replies, try again after this many seconds.
OUTBOX_RETRY = 1.0
UNAVAILABLE: Answer = (503, {"error": "the event could not be recorded; retry later"})
STOPPING: Answer = (503, {"error": "the bot is stopping; retry later"})


def _follow_rasa_log_level() -> None:
    """Log at the level ``rasa run`` was given (``--debug``, ``--verbose``, LOG_LEVEL),
    which Rasa sets on its own ``rasa`` logger only."""
    package_logger = logging.getLogger("rasa_sparkcentral")
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.getLogger("rasa").getEffectiveLevel())


def _is_outage(error: BaseException) -> bool:
    """A store the turn needs could not be reached (rather than Rasa failing on it)."""
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return True
    kind = type(error)
    return kind.__module__.startswith("redis") and kind.__name__ in (
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
    )


class SparkcentralConfigError(RasaException):
    """A setting in credentials.yml is missing or malformed."""


class SparkcentralInput(InputChannel):
    """Receives Sparkcentral's Virtual Agent webhook and hands messages to Rasa."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> SparkcentralInput:
        if credentials is None:
            cls.raise_missing_credentials_exception()
        _follow_rasa_log_level()
        try:
            settings = Settings.from_credentials(credentials)
        except ConfigError as e:
            raise SparkcentralConfigError(str(e)) from None
        return cls(settings)

    def __init__(
        self,
        settings: Settings,
        *,
        client: Optional[SparkcentralClient] = None,
        state: Optional[ChannelState] = None,
        journal: Optional[Journal] = None,
        outbox: Optional[Outbox] = None,
    ) -> None:
        self.settings = settings
        self.client = client or (SparkcentralClient(settings) if settings.has_api_keys else None)
        self.state = state or make_state(
            settings.redis_url, max_size=settings.cache_size, dedup_ttl=settings.dedup_ttl
        )
        self.inbound = Inbound(settings)
        self._journal = journal
        self._outbox = outbox
        self._ordering: Optional[Ordering] = None
        self._sender: Optional[ReplySender] = None
        self._thread: Optional[WebhookThread] = None
        self._sweeper: Optional[asyncio.Task[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._app: Any = None
        self._on_new_message: Optional[OnNewMessage] = None
        #: webhook reply mode: the answers waiting for their turn, by journal key
        self._waiters: Dict[str, Tuple[WebhookAnswer, asyncio.Future[None]]] = {}
        #: keys whose turn started in this process and is not finished yet
        self._attempted: Set[str] = set()
        self.stopping = False
        self.skipped_replays = 0

    # -- the parts, once started ------------------------------------------------------

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the Sparkcentral channel is not started")
        return self._journal

    @property
    def ordering(self) -> Ordering:
        if self._ordering is None:
            raise RuntimeError("the Sparkcentral channel is not started")
        return self._ordering

    # -- Rasa's InputChannel API --------------------------------------------------------

    def get_output_channel(self) -> Optional[SparkcentralOutput]:
        """For Rasa's ``trigger_intent`` API: replies go over REST."""
        if self.client is None:
            return None
        return SparkcentralOutput(self.client, self.state, self.settings)

    def get_metadata(self, request: Request) -> Optional[Dict[str, Any]]:
        """The channel details of the event being handled (set by the webhook handler)."""
        metadata = getattr(request.ctx, "sparkcentral_metadata", None)
        return metadata if isinstance(metadata, dict) else None

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        webhook = Blueprint("sparkcentral_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            if self.stopping:
                return response.json({"status": "stopping"}, status=503)
            return response.json(await self.health())

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        @webhook.listener("before_server_start")
        async def start(app: Any, loop: Any = None) -> None:
            await self.start(app, on_new_message)

        @webhook.listener("after_server_start")
        async def recover(app: Any, loop: Any = None) -> None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

        @webhook.listener("before_server_stop")
        async def drain(app: Any, loop: Any = None) -> None:
            await self.stop_taking_work()

        @webhook.listener("after_server_stop")
        async def close(app: Any, loop: Any = None) -> None:
            await self.aclose()

        return webhook

    async def start(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Open the journal and the outbox; serve ``webhook_port`` if set."""
        self._app = app
        self._on_new_message = on_new_message
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        if self._journal is None or self._outbox is None:
            port = settings.webhook_port or getattr(getattr(app, "state", None), "port", None)
            instance = Instance.create(settings.instance_name, port or None)
            path = Path(settings.journal_path)
            if self._journal is None:
                self._journal = make_journal(
                    settings.redis_url,
                    path=path,
                    instance=instance,
                    dedup_ttl=settings.dedup_ttl,
                    claim_after=settings.claim_after,
                )
            if self._outbox is None:
                self._outbox = make_outbox(
                    settings.redis_url,
                    path=path.with_suffix(".outbox.sqlite3"),
                    instance=instance,
                    reply_deadline=settings.reply_deadline,
                    dedup_ttl=settings.dedup_ttl,
                    claim_after=settings.claim_after,
                )
        await self._journal.start()
        await self._outbox.start()
        self._ordering = Ordering(
            self._journal, self._handle, max_concurrent_turns=settings.max_concurrent_turns
        )
        if self.client is not None:
            self._sender = ReplySender(
                self._outbox,
                self.client,
                backoff_base=settings.backoff_base,
                backoff_max=settings.backoff_max,
            )
        if settings.webhook_port:
            self._thread = WebhookThread(
                settings, settings.webhook_host, settings.webhook_port, self._record_from_thread
            )
            self._thread.ready = lambda: not self.stopping
            self._thread.start()

    # -- the webhook ------------------------------------------------------------------

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        if self.stopping:
            return response.json(STOPPING[1], status=STOPPING[0])
        body = request.body or b""
        screened = screen(self.settings, body, signature_of(request.headers), request.ip)
        if screened.event is None:
            return response.json(screened.answer, status=screened.status)
        status, answer = await self.accept(screened.event, body)
        return response.json(answer, status=status)

    async def accept(self, event: Event, body: bytes) -> Answer:
        """Record the event (200 only once it is durable) and wake its conversation; in
        reply mode "webhook", answer with what its turn produces."""
        key = event.idempotency_key or f"nokey:{uuid.uuid4().hex}"
        conversation_id = event.conversation_id
        waiter: Optional[Tuple[WebhookAnswer, asyncio.Future[None]]] = None
        if self.settings.reply_mode == "webhook":
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # the contact's message this turn answers: REST applyTags name it
            waiter = (WebhookAnswer(RestSink(self.client, event.message_id), self.settings), done)
            self._waiters[key] = waiter
        try:
            # recorded even if the request is cancelled meanwhile
            outcome = await asyncio.shield(self.journal.record(key, conversation_id, body))
        except JournalUnavailable:
            self._waiters.pop(key, None)
            return UNAVAILABLE
        if outcome is not Accepted.NEW:
            self._waiters.pop(key, None)
            logger.info(
                "A repeated delivery %s for conversation %s (%s)",
                key,
                conversation_id,
                outcome.value,
            )
            waiter = None
        if outcome is not Accepted.DONE:
            self.ordering.wake(conversation_id)
        if waiter is None:
            return 200, {}
        return 200, await waiter[0].answer(conversation_id, waiter[1])

    async def _record_from_thread(self, event: Event, body: bytes) -> Answer:
        """The webhook thread's accept: record on its loop, wake on Rasa's."""
        if self.stopping:
            return STOPPING
        try:
            outcome = await self.journal.record(
                event.idempotency_key or f"nokey:{uuid.uuid4().hex}", event.conversation_id, body
            )
        except JournalUnavailable:
            return UNAVAILABLE
        if outcome is not Accepted.DONE and self._loop is not None:
            self._loop.call_soon_threadsafe(self.ordering.wake, event.conversation_id)
        return 200, {}

    # -- a turn -----------------------------------------------------------------------

    async def _handle(self, entry: Entry) -> None:
        """Run one journal entry's turn, queue its replies, finish it. Raises
        JournalUnavailable to leave it for later."""
        journal = self.journal
        try:
            event = parse_event(entry.body)
        except ProtocolError:
            await journal.finish(entry, failed=True)
            return
        conversation_id = entry.conversation_id
        agent = getattr(getattr(self._app, "ctx", None), "agent", None)
        waiter = self._waiters.pop(entry.key, None)
        replay = entry.accepted_by != journal.instance.token or entry.key in self._attempted
        key = event.idempotency_key
        if replay and key and await already_handled(agent, conversation_id, key):
            logger.info(
                "Conversation %s: %s was handled before (in the tracker); not run again",
                conversation_id,
                entry.key,
            )
            self.skipped_replays += 1
            await journal.finish(entry)
            if waiter is not None and not waiter[1].done():
                waiter[1].set_result(None)
            return
        self._attempted.add(entry.key)
        rest = RestSink(self.client, event.message_id)
        sink: Sink = rest
        if waiter is not None:
            sink = waiter[0]
        elif self._sender is not None:
            sink = OutboxSink(rest, entry.key, self._enqueue_reply)
        output = SparkcentralOutput(self.client, self.state, self.settings, sink)
        failed = False
        try:
            await self.ordering.run_in_slot(self._turn(event, output, agent))
        except JournalUnavailable:
            raise  # the outbox could not take a reply: leave the entry for later
        except Exception as e:
            if _is_outage(e):  # a store (channel state, tracker) is down: run it later
                raise JournalUnavailable(f"{type(e).__name__}: {e}") from e
            failed = True
            logger.exception(
                "Rasa failed to handle %s for conversation %s", event.type, conversation_id
            )
        if waiter is not None:
            if not waiter[1].done():
                waiter[1].set_result(None)
            await waiter[0].send_rest(conversation_id)
        await journal.finish(entry, failed=failed)
        self._attempted.discard(entry.key)

    async def _turn(self, event: Event, output: SparkcentralOutput, agent: Any) -> None:
        conversation_id = event.conversation_id
        details, known = await channel_details(self.state, event)
        planned = await self.inbound.turn(
            event,
            metadata=message_metadata(details, event),
            output=output,
            shown=shown_buttons(self.state, agent, conversation_id, known),
            parse=getattr(agent, "parse_message", None),
            session_is_live=session_is_live(agent, conversation_id),
        )
        for body in planned.actions:
            await output.deliver(conversation_id, body)
        assert self._on_new_message is not None
        for message in planned.messages:
            await self._on_new_message(message)

    async def _enqueue_reply(self, conversation_id: str, body: Dict[str, Any], key: str) -> None:
        """Put one reply into the outbox (waiting out a short outage), then wake the
        conversation's sender."""
        assert self._outbox is not None and self._sender is not None
        encoded = [json.dumps(body).encode()]
        while True:
            try:
                await self._outbox.put(conversation_id, encoded, key)
                break
            except JournalUnavailable:
                if self.ordering.closing:
                    raise
                await asyncio.sleep(OUTBOX_RETRY)
        self._sender.wake(conversation_id)

    # -- recovery, health, shutdown ---------------------------------------------------

    async def sweep(self) -> int:
        """Wake every conversation with unfinished events or unsent replies (on start:
        replay what a previous run left; later: what a dead instance left)."""
        woken = 0
        try:
            for conversation_id in await self.journal.conversations_with_work():
                self.ordering.wake(conversation_id)
                woken += 1
            if self._sender is not None and self._outbox is not None:
                for conversation_id in await self._outbox.conversations_with_work():
                    self._sender.wake(conversation_id)
        except JournalUnavailable:
            pass  # logged by the journal's outage log; next sweep
        return woken

    async def _sweep_forever(self) -> None:
        first = await self.sweep()
        if first:
            logger.info("Replaying the unfinished events of %d conversations", first)
        interval = max(1.0, self.settings.claim_after / 3)
        while not self.stopping:
            await asyncio.sleep(interval)
            await self.sweep()

    async def health(self) -> Dict[str, Any]:
        counts = await self.journal.counts() if self._journal is not None else None
        report: Dict[str, Any] = {"status": "ok", "channel": CHANNEL_NAME}
        if counts is not None:
            report["journal"] = {
                "backend": counts.backend,
                "accepted": counts.accepted,
                "repeats": counts.repeats,
                "finished": counts.finished,
                "replayed": counts.replayed,
                "replay_skipped": self.skipped_replays,
                "failed": counts.failed,
                "unavailable": counts.unavailable,
                "pending": counts.pending,
            }
        if self._outbox is not None:
            try:
                box = await self._outbox.counts()
                report["outbox"] = {
                    "put": box.put,
                    "sent": box.sent,
                    "given_up": box.given_up,
                    "pending": box.pending,
                }
            except JournalUnavailable:
                report["outbox"] = {"pending": -1}
        return report

    @property
    def pending_conversations(self) -> int:
        """Conversations with a turn running here, or replies still being sent."""
        running = self._ordering.pending_conversations if self._ordering is not None else 0
        sending = self._sender.active if self._sender is not None else 0
        return running + sending

    async def stop_taking_work(self) -> None:
        """SIGTERM: unready, new webhooks 503; turns in flight finish within the grace."""
        self.stopping = True
        if self._ordering is not None:
            await self._ordering.aclose(self.settings.shutdown_grace)

    async def aclose(self) -> None:
        """Close everything; what is unfinished stays in the journal and outbox."""
        self.stopping = True
        if self._thread is not None:
            self._thread.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._ordering is not None and not self._ordering.closing:
            await self._ordering.aclose(self.settings.shutdown_grace)
        if self._sender is not None:
            await self._sender.aclose(self.settings.request_timeout)
        for store in (self._journal, self._outbox):
            if store is not None:
                try:
                    await store.close()
                except Exception as e:
                    logger.debug("closing %s failed: %s", type(store).__name__, e)
        if self.client is not None:
            await self.client.close()
        await self.state.close()
