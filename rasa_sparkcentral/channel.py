"""The Rasa input channel: Sparkcentral's Virtual Agent webhook (``SparkcentralInput``).

Rasa's channel API, the routes and dispatch; each step has its own room:
webhook → ``screening`` (size, signature, shape) → ``turns`` (``journal`` before the 200,
``ordering``, ``inbound`` → Rasa → ``output`` → ``outbox`` → ``sender``, or
``webhook_answer`` in reply mode "webhook"; ``webhook_process``, recovery, health and
shutdown). ``preflight`` checks once, after start, that our actions can run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Optional

from rasa.core.channels.channel import InputChannel
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_sparkcentral.client import SparkcentralClient
from rasa_sparkcentral.config import ConfigError, Settings
from rasa_sparkcentral.inbound import Inbound
from rasa_sparkcentral.journal import Journal
from rasa_sparkcentral.ordering import Ordering
from rasa_sparkcentral.outbox import Outbox
from rasa_sparkcentral.output import SparkcentralOutput
from rasa_sparkcentral.preflight import check_actions
from rasa_sparkcentral.protocol import CHANNEL_NAME, Event
from rasa_sparkcentral.screening import STOPPING, Answer, screen
from rasa_sparkcentral.signature import signature_of
from rasa_sparkcentral.state import ChannelState, make_state
from rasa_sparkcentral.turns import OnNewMessage, Turns

logger = logging.getLogger(__name__)


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
        journal: Optional[Journal] = None,
        outbox: Optional[Outbox] = None,
    ) -> None:
        self.settings = settings
        self.turns = Turns(
            settings,
            client or (SparkcentralClient(settings) if settings.has_api_keys else None),
            state
            or make_state(
                settings.redis_url, max_size=settings.cache_size, dedup_ttl=settings.dedup_ttl
            ),
            Inbound(settings),
            journal=journal,
            outbox=outbox,
        )
        self._preflight: Optional[asyncio.Task[Any]] = None

    # -- the parts (they live in ``turns``) ---------------------------------------------

    @property
    def client(self) -> Optional[SparkcentralClient]:
        return self.turns.client

    @property
    def state(self) -> ChannelState:
        return self.turns.state

    @property
    def inbound(self) -> Inbound:
        return self.turns.inbound

    @property
    def journal(self) -> Journal:
        return self.turns.journal

    @property
    def ordering(self) -> Ordering:
        return self.turns.ordering

    @property
    def stopping(self) -> bool:
        return self.turns.stopping

    @property
    def skipped_replays(self) -> int:
        return self.turns.skipped_replays

    @property
    def pending_conversations(self) -> int:
        """Conversations with a turn running here, or replies still being sent."""
        return self.turns.pending_conversations

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
            self.turns.start_sweeping()
            self._preflight = asyncio.get_running_loop().create_task(check_actions(app))

        @webhook.listener("before_server_stop")
        async def drain(app: Any, loop: Any = None) -> None:
            await self.stop_taking_work()

        @webhook.listener("after_server_stop")
        async def close(app: Any, loop: Any = None) -> None:
            await self.aclose()

        return webhook

    async def start(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Open the journal and the outbox; serve ``webhook_port`` if set."""
        await self.turns.start(app, on_new_message)

    # -- the webhook --------------------------------------------------------------------

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
        return await self.turns.accept(event, body)

    # -- recovery, health, shutdown -----------------------------------------------------

    async def sweep(self) -> int:
        """Wake every conversation with unfinished events or unsent replies."""
        return await self.turns.sweep()

    async def health(self) -> Dict[str, Any]:
        return await self.turns.health()

    async def stop_taking_work(self) -> None:
        """SIGTERM: unready, new webhooks 503; turns in flight finish within the grace."""
        await self.turns.stop_taking_work()

    async def aclose(self) -> None:
        """Close everything; what is unfinished stays in the journal and outbox."""
        if self._preflight is not None:
            self._preflight.cancel()
        await self.turns.aclose()
