"""The Rasa input channel: Sparkcentral's Virtual Agent webhook (``SparkcentralInput``).

webhook → verify signature → parse event → dedupe → UserMessage (channel details as
metadata) → Rasa, per conversation in arrival order → ``SparkcentralOutput`` → REST.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUttered
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_sparkcentral import buttons as button_list
from rasa_sparkcentral.acceptor import WebhookAcceptor
from rasa_sparkcentral.client import SparkcentralClient
from rasa_sparkcentral.config import ConfigError, Settings
from rasa_sparkcentral.output import AnswerCollector, SparkcentralOutput
from rasa_sparkcentral.protocol import (
    ASSIGNMENT_EVENTS,
    CHANNEL_NAME,
    METADATA_KEY,
    SIGNATURE_HEADER,
    ChannelDetails,
    Event,
)
from rasa_sparkcentral.replies import merge_answer
from rasa_sparkcentral.screening import screen
from rasa_sparkcentral.state import ChannelState, MemoryState, make_state

logger = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
OnNewMessage = Callable[[UserMessage], Awaitable[Any]]

RESTART_TEXT = "/restart"
#: How long a stopping server waits for conversations still being processed.
SHUTDOWN_GRACE = 10.0


def _follow_rasa_log_level() -> None:
    """Log at the level ``rasa run`` was given (``--debug``, ``--verbose``, LOG_LEVEL),
    which Rasa sets on its own ``rasa`` logger only."""
    package_logger = logging.getLogger("rasa_sparkcentral")
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.getLogger("rasa").getEffectiveLevel())


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
    ) -> None:
        self.settings = settings
        self.client = client or (SparkcentralClient(settings) if settings.has_api_keys else None)
        self.state = state or make_state(
            settings.redis_url, max_size=settings.cache_size, dedup_ttl=settings.dedup_ttl
        )
        self._queues: Dict[str, Deque[Job]] = {}
        self._tasks: Set[asyncio.Task[None]] = set()
        self._ticketing: Dict[str, asyncio.Future[None]] = {}
        self._turn_slots: Optional[asyncio.Semaphore] = None
        self._acceptor: Optional[WebhookAcceptor] = None

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
            return response.json({"status": "ok", "channel": CHANNEL_NAME})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self.handle_webhook(request, on_new_message)

        @webhook.listener("before_server_start")
        async def start_acceptor(app: Any, loop: Any) -> None:
            if self.settings.webhook_port:
                self._start_acceptor(app, on_new_message)

        @webhook.listener("after_server_stop")
        async def close(app: Any, loop: Any) -> None:
            if self._acceptor is not None:
                self._acceptor.stop()
            await self.aclose()

        return webhook

    def _start_acceptor(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Serve the webhook on ``webhook_port`` too, answered on its own thread."""
        loop = asyncio.get_running_loop()

        def hand_off(event: Event) -> None:
            # runs on the acceptor's thread: schedule, in arrival order, on Rasa's loop
            agent = getattr(app.ctx, "agent", None)
            loop.call_soon_threadsafe(self._dispatch_soon, event, on_new_message, agent)

        port = self.settings.webhook_port
        assert port is not None
        self._acceptor = WebhookAcceptor(self.settings, self.settings.webhook_host, port, hand_off)
        self._acceptor.start()

    def _dispatch_soon(self, event: Event, on_new_message: OnNewMessage, agent: Any) -> None:
        async def accept() -> None:
            await self.dispatch(event, on_new_message, agent)

        task = asyncio.create_task(accept())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the webhook ------------------------------------------------------------------

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        screened = screen(
            self.settings, request.body or b"", request.headers.get(SIGNATURE_HEADER), request.ip
        )
        if screened.event is None:
            return response.json(screened.answer, status=screened.status)
        event = screened.event
        agent = getattr(request.app.ctx, "agent", None)
        answer, metadata = await self.dispatch(event, on_new_message, agent)
        request.ctx.sparkcentral_metadata = metadata
        return response.json(answer)

    async def dispatch(
        self, event: Event, on_new_message: OnNewMessage, agent: Any
    ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
        """Queue an accepted event's turn; return the webhook answer and the metadata its
        messages carry (None for a repeated delivery)."""
        collector = AnswerCollector() if self.settings.reply_mode == "webhook" else None
        output = SparkcentralOutput(self.client, self.state, self.settings, collector)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        accepting = self._accept(event, on_new_message, output, agent, done)
        if isinstance(self.state, MemoryState):
            metadata = await accepting  # never suspends: nothing can interrupt it
        else:
            # Once the delivery is claimed its turn must be queued, even if the request
            # is cancelled meanwhile (Sparkcentral's retry would be ignored as a repeat).
            metadata = await asyncio.shield(accepting)
        if metadata is None or collector is None:
            return {}, metadata
        return await self._answer(event.conversation_id, done, collector, output), metadata

    async def _accept(
        self,
        event: Event,
        on_new_message: OnNewMessage,
        output: SparkcentralOutput,
        agent: Any,
        done: asyncio.Future[None],
    ) -> Optional[Dict[str, Any]]:
        """Claim the delivery and queue its turn; return the metadata its messages carry
        (None: a repeated delivery, ignored)."""
        conversation_id = event.conversation_id
        if event.idempotency_key and not await self.state.claim_delivery(event.idempotency_key):
            logger.info(
                "Ignored a repeated delivery %s for conversation %s",
                event.idempotency_key,
                conversation_id,
            )
            return None
        details, known = await self._details_for(event)
        metadata = {METADATA_KEY: details.to_dict()}

        def make_job(ticket: Optional[int]) -> Job:
            async def job() -> None:
                try:
                    if ticket is not None:
                        await self._wait_turn(conversation_id, ticket)
                    async with self._turn_slot():
                        messages = await self._messages_for(event, metadata, output, agent, known)
                        for message in messages:
                            await on_new_message(message)
                except Exception:
                    logger.exception(
                        "Rasa failed to handle %s for conversation %s",
                        event.type,
                        conversation_id,
                    )
                finally:
                    if not done.done():
                        done.set_result(None)
                try:
                    if output.collector is not None:
                        await self._send_rest_of_answer(conversation_id, output)
                finally:
                    if ticket is not None:
                        await self._finish_turn(conversation_id, ticket)

            return job

        await self._enqueue_in_turn(conversation_id, make_job)
        return metadata

    async def _details_for(self, event: Event) -> Tuple[ChannelDetails, bool]:
        """The conversation's channel details, and whether the channel state knew the
        conversation already (False after a restart without Redis, say)."""
        if event.type in ASSIGNMENT_EVENTS:
            details = ChannelDetails.from_event(event)
            await self.state.save_details(event.conversation_id, details.to_dict())
            return details, True
        stored = await self.state.load_details(event.conversation_id)
        if stored:
            return ChannelDetails.from_dict(stored), True
        return ChannelDetails(conversation_id=event.conversation_id), False

    async def _messages_for(
        self,
        event: Event,
        metadata: Dict[str, Any],
        output: SparkcentralOutput,
        agent: Any,
        known: bool,
    ) -> List[UserMessage]:
        """The messages one event becomes (built when its turn comes, so buttons shown by
        the previous turn are known)."""
        conversation_id = event.conversation_id
        key = event.idempotency_key

        def message(
            text: str, suffix: str, parse_data: Optional[Dict[str, Any]] = None
        ) -> UserMessage:
            return UserMessage(
                text=text,
                output_channel=output,
                sender_id=conversation_id,
                input_channel=self.name(),
                message_id=f"{key}{suffix}" if key else None,
                metadata=metadata,
                parse_data=parse_data,
            )

        if event.type in ASSIGNMENT_EVENTS:
            # The conversation is (again) the bot's: a fresh session with fresh details.
            # /restart also lifts the pause left by an earlier handoff.
            messages = [message(RESTART_TEXT, ":restart")]
            if self.settings.conversation_started_intent:
                messages.append(message(f"/{self.settings.conversation_started_intent}", ":start"))
            return messages

        text = event.text
        shown = await self.state.take_buttons(conversation_id)
        if shown is None and not known:
            shown = await buttons_from_tracker(agent, conversation_id)
        if shown:
            payload = button_list.match(text, shown)
            if payload is not None:
                text = payload
        if text is None:
            text = ""
        parse_data = None
        if self.settings.intent_topics and agent is not None and text:
            parse_data = await agent.parse_message(text)
            topic = self._topic_for(parse_data)
            if topic:
                await output.deliver(conversation_id, {"applyTopics": [topic]})
        return [message(text, "", parse_data)]

    def _topic_for(self, parse_data: Dict[str, Any]) -> Optional[str]:
        intent = (parse_data.get("intent") or {}).get("name")
        if not intent:
            return None
        mapping = self.settings.intent_topics
        if isinstance(mapping, dict):
            topic = mapping.get(intent)
            return str(topic) if topic else None
        return str(intent)

    async def _answer(
        self,
        conversation_id: str,
        done: asyncio.Future[None],
        collector: AnswerCollector,
        output: SparkcentralOutput,
    ) -> Dict[str, Any]:
        """Webhook reply mode: wait for the turn (up to the deadline), answer with what
        it produced; anything the answer can't carry goes over REST."""
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=self.settings.webhook_timeout)
        except asyncio.TimeoutError:
            logger.info(
                "Conversation %s: the bot took longer than %.1fs; answering the webhook now, "
                "later replies go over REST",
                conversation_id,
                self.settings.webhook_timeout,
            )
        answer, rest = merge_answer(
            collector.bodies,
            can_use_rest=self.client is not None,
            allow_successor_fields=self.settings.allow_successor_fields,
        )
        collector.close(rest)
        return answer

    async def _send_rest_of_answer(self, conversation_id: str, output: SparkcentralOutput) -> None:
        """After a turn in webhook mode: once the webhook is answered, send what the answer
        could not carry, before the conversation's next turn."""
        collector = output.collector
        assert collector is not None
        try:
            await asyncio.wait_for(
                collector.answered.wait(), timeout=self.settings.webhook_timeout + 1.0
            )
        except asyncio.TimeoutError:
            # the webhook request went away before it was answered: everything goes over REST
            if not collector.closed:
                collector.close(list(collector.bodies))
        await output.flush(conversation_id)

    # -- per-conversation order -----------------------------------------------------------

    def _turn_slot(self) -> asyncio.Semaphore:
        """Bounds the turns Rasa works on at once. Rasa's NLU and policies run on the
        event loop that also answers webhooks: fewer turns in flight keep the
        acknowledgement fast without costing throughput."""
        if self._turn_slots is None:
            self._turn_slots = asyncio.Semaphore(self.settings.max_concurrent_turns)
        return self._turn_slots

    async def _enqueue_in_turn(
        self, conversation_id: str, make_job: Callable[[Optional[int]], Job]
    ) -> None:
        """Take the event's turn ticket and queue its job.

        With Redis state the ticket orders the conversation's events across every
        instance, in the order the webhooks were received. Here, one event at a time per
        conversation takes its ticket and joins the queue, so that this instance's queue
        and the tickets agree (a later ticket ahead of an earlier one would wait for it).
        """
        previous = self._ticketing.get(conversation_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticketing[conversation_id] = mine
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            ticket: Optional[int] = None
            try:
                ticket = await self.state.take_turn(conversation_id)
            except Exception as e:
                logger.error(
                    "Conversation %s: could not take a turn ticket from the shared state "
                    "(%s); its order across instances is not guaranteed",
                    conversation_id,
                    type(e).__name__,
                )
            self._enqueue(conversation_id, make_job(ticket))
        finally:
            if not mine.done():
                mine.set_result(None)
            if self._ticketing.get(conversation_id) is mine:
                del self._ticketing[conversation_id]

    async def _wait_turn(self, conversation_id: str, ticket: int) -> None:
        """Wait until the conversation's earlier events (on any instance) are handled."""
        timeout = self.settings.order_timeout
        try:
            in_turn = await self.state.wait_turn(conversation_id, ticket, timeout)
        except Exception as e:
            logger.error(
                "Conversation %s: could not check the order of its messages (%s); going on",
                conversation_id,
                type(e).__name__,
            )
            return
        if not in_turn:
            logger.warning(
                "Conversation %s: an earlier message was still not handled after %.0fs "
                "(did an instance stop?); handling the next one",
                conversation_id,
                timeout,
            )

    async def _finish_turn(self, conversation_id: str, ticket: int) -> None:
        try:
            await self.state.finish_turn(conversation_id, ticket)
        except Exception as e:
            logger.error(
                "Conversation %s: could not record a handled message in the shared state "
                "(%s); its next message waits up to %.0fs",
                conversation_id,
                type(e).__name__,
                self.settings.order_timeout,
            )

    def _enqueue(self, conversation_id: str, job: Job) -> None:
        """Run ``job`` after every job queued before it for the same conversation."""
        queue = self._queues.get(conversation_id)
        if queue is not None:
            queue.append(job)
            return
        queue = deque([job])
        self._queues[conversation_id] = queue
        task = asyncio.create_task(self._drain(conversation_id, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, conversation_id: str, queue: Deque[Job]) -> None:
        try:
            while queue:
                try:
                    await queue[0]()
                except Exception:
                    logger.exception("Conversation %s: a queued job failed", conversation_id)
                queue.popleft()
        finally:
            if self._queues.get(conversation_id) is queue:
                del self._queues[conversation_id]

    @property
    def pending_conversations(self) -> int:
        return len(self._queues)

    async def aclose(self) -> None:
        """Let queued turns finish (briefly), then close the HTTP session and state."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=SHUTDOWN_GRACE)
        if self.client is not None:
            await self.client.close()
        await self.state.close()


async def buttons_from_tracker(agent: Any, conversation_id: str) -> Optional[List[Dict[str, str]]]:
    """The buttons of the bot's last message, read from Rasa's tracker store.

    Used when the channel's own state does not know the conversation (a restart without
    Redis): the tracker store is persistent, so numbered answers keep working.
    """
    tracker_store = getattr(agent, "tracker_store", None)
    if tracker_store is None:
        return None
    try:
        tracker = await tracker_store.retrieve(conversation_id)
    except Exception:
        logger.warning(
            "Conversation %s: could not read the tracker to find the buttons last shown",
            conversation_id,
            exc_info=True,
        )
        return None
    if tracker is None:
        return None
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            return None
        if isinstance(event, BotUttered):
            data = event.data or {}
            shown = data.get("buttons") or data.get("quick_replies")
            if shown:
                return button_list.normalise(shown)
    return None
