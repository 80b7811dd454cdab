"""An optional second listener for the webhook, on its own thread and event loop.

Rasa's NLU and policies run on the event loop that also serves ``rasa run``'s HTTP port:
under load, a webhook there waits for whatever Rasa is computing. With ``webhook_port``
set, this thread answers the webhook itself (signature, shape, 200) within milliseconds
whatever the bot is doing: each accepted event is recorded in the journal (on this
thread's loop) before the 200, and Rasa's loop is woken to run it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from aiohttp import web

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import (
    CHANNEL_NAME,
    HEALTH_PATH,
    WEBHOOK_PATH,
    Event,
)
from rasa_sparkcentral.screening import screen
from rasa_sparkcentral.signature import signature_of

logger = logging.getLogger(__name__)


class WebhookThread:
    """Serves ``POST /webhooks/sparkcentral/webhook`` on ``host:port`` from a thread.

    ``accept(event, body)`` is awaited on that thread's loop for every event to handle
    and gives the HTTP status and answer (it records the event; it must not block).
    ``ready()`` False makes the health check and new webhooks answer 503 (stopping).
    """

    def __init__(
        self,
        settings: Settings,
        host: str,
        port: int,
        accept: Callable[[Event, bytes], Awaitable[Tuple[int, Dict[str, Any]]]],
    ) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._accept = accept
        self.ready: Callable[[], bool] = lambda: True
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopped: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; raises when the port can't be bound."""
        self._thread = threading.Thread(target=self._run, name="sparkcentral-webhook", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(
                f"the Sparkcentral webhook listener did not start on port {self._port}"
            )
        if self._error is not None:
            raise RuntimeError(
                f"the Sparkcentral webhook listener could not listen on "
                f"{self._host}:{self._port}: {self._error}"
            )
        logger.info(
            "Sparkcentral webhook also served on http://%s:%d%s",
            self._host,
            self._port,
            WEBHOOK_PATH,
        )

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=self._settings.max_body_bytes + 1)
        app.router.add_post(WEBHOOK_PATH, self._receive)
        app.router.add_get(HEALTH_PATH, self._health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_port=True)
            await site.start()
        except OSError as e:
            self._error = e
            self._ready.set()
            await runner.cleanup()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        if not self.ready():
            return web.json_response({"status": "stopping"}, status=503)
        return web.json_response({"status": "ok", "channel": CHANNEL_NAME})

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "request body too large"}, status=413)
        screened = screen(self._settings, body, signature_of(request.headers), request.remote)
        if screened.event is None:
            return web.json_response(screened.answer, status=screened.status)
        status, answer = await self._accept(screened.event, body)
        return web.json_response(answer, status=status)
