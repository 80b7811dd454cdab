"""The Rasa input channel: Sparkcentral's Virtual Agent webhook (``SparkcentralInput``).

Rasa's channel API, the routes and dispatch; each step has its own room:
webhook → ``screening`` (size, signature, shape) → ``state`` (dedup, details) →
``ordering`` (per conversation, in arrival order) → ``inbound`` (the UserMessages) → Rasa →
``output`` → REST, or ``webhook_answer`` in reply mode "webhook". ``webhook_thread`` serves
the webhook on ``webhook_port`` too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

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
from rasa_sparkcentral.ordering import Ordering, make_tickets
from rasa_sparkcentral.output import RestSink, SparkcentralOutput
from rasa_sparkcentral.protocol import CHANNEL_NAME, Event
from rasa_sparkcentral.screening import screen
from rasa_sparkcentral.signature import signature_of
from rasa_sparkcentral.state import ChannelState, make_state
from rasa_sparkcentral.webhook_answer import WebhookAnswer
from rasa_sparkcentral.webhook_thread import WebhookThread

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
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
        ordering: Optional[Ordering] = None,
    ) -> None:
        self.settings = settings
        self.client = client or (SparkcentralClient(settings) if settings.has_api_keys else None)
        self.state = state or make_state(
            settings.redis_url, max_size=settings.cache_size, dedup_ttl=settings.dedup_ttl
        )
        self.ordering = ordering or Ordering(
            make_tickets(settings.redis_url),
            max_concurrent_turns=settings.max_concurrent_turns,
            order_timeout=settings.order_timeout,
        )
        self.inbound = Inbound(settings)
        self._thread: Optional[WebhookThread] = None

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
        async def start_webhook_thread(app: Any, loop: Any = None) -> None:
            if self.settings.webhook_port:
                self._start_webhook_thread(app, on_new_message)

        @webhook.listener("after_server_stop")
        async def close(app: Any, loop: Any = None) -> None:
            if self._thread is not None:
                self._thread.stop()
            await self.aclose()

        return webhook

    def _start_webhook_thread(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Serve the webhook on ``webhook_port`` too, answered on its own thread."""
        loop = asyncio.get_running_loop()

        def hand_off(event: Event) -> None:
            # runs on the webhook thread: schedule, in arrival order, on Rasa's loop
            agent = getattr(app.ctx, "agent", None)
            loop.call_soon_threadsafe(self._dispatch_soon, event, on_new_message, agent)

        port = self.settings.webhook_port
        assert port is not None
        self._thread = WebhookThread(self.settings, self.settings.webhook_host, port, hand_off)
        self._thread.start()

    def _dispatch_soon(self, event: Event, on_new_message: OnNewMessage, agent: Any) -> None:
        async def accept() -> None:
            await self.dispatch(event, on_new_message, agent)

        self.ordering.spawn(accept())

    # -- the webhook ------------------------------------------------------------------

    async def handle_webhook(self, request: Request, on_new_message: OnNewMessage) -> HTTPResponse:
        screened = screen(
            self.settings, request.body or b"", signature_of(request.headers), request.ip
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
        # the contact's message this turn answers: REST applyTags name it
        rest = RestSink(self.client, event.message_id)
        answer = (
            WebhookAnswer(rest, self.settings) if self.settings.reply_mode == "webhook" else None
        )
        output = SparkcentralOutput(self.client, self.state, self.settings, answer or rest)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Once the delivery is claimed its turn must be queued, even if the request is
        # cancelled meanwhile (Sparkcentral's retry would be ignored as a repeat).
        metadata = await asyncio.shield(
            self._accept(event, on_new_message, output, agent, done, answer)
        )
        if metadata is None or answer is None:
            return {}, metadata
        return await answer.answer(event.conversation_id, done), metadata

    async def _accept(
        self,
        event: Event,
        on_new_message: OnNewMessage,
        output: SparkcentralOutput,
        agent: Any,
        done: asyncio.Future[None],
        answer: Optional[WebhookAnswer],
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
        details, known = await channel_details(self.state, event)
        metadata = message_metadata(details, event)

        async def turn() -> None:
            try:
                planned = await self.inbound.turn(
                    event,
                    metadata=metadata,
                    output=output,
                    shown=shown_buttons(self.state, agent, conversation_id, known),
                    parse=getattr(agent, "parse_message", None),
                    session_is_live=session_is_live(agent, conversation_id),
                )
                for body in planned.actions:
                    await output.deliver(conversation_id, body)
                for message in planned.messages:
                    await on_new_message(message)
            except Exception:
                logger.exception(
                    "Rasa failed to handle %s for conversation %s", event.type, conversation_id
                )

        async def then() -> None:
            if not done.done():
                done.set_result(None)
            if answer is not None:
                await answer.send_rest(conversation_id)

        await self.ordering.submit(conversation_id, turn, then)
        return metadata

    @property
    def pending_conversations(self) -> int:
        return self.ordering.pending_conversations

    async def aclose(self) -> None:
        """Let queued turns finish (briefly), then close the HTTP session and state."""
        await self.ordering.aclose(SHUTDOWN_GRACE)
        if self.client is not None:
            await self.client.close()
        await self.state.close()
