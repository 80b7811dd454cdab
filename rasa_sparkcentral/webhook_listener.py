"""The ``webhook_port`` listener: a child process of ``rasa run`` that answers the webhook
itself (signature, shape, a record in the journal, then 200) and tells the bot's process
what it recorded (``webhook_process`` is the bot's side).

Why a process and not a thread of ``rasa run``: a thread needs Python's GIL for every step
of every webhook, and Rasa computes for long stretches without releasing it; the
hand-overs cost Rasa's turns more than the webhook work itself (measured: about 2 % of
throughput at 10 conversations). This process shares no GIL with Rasa and runs on another
core. It imports neither Rasa nor the channel, only the screening rules and the journal.

It records where the bot's journal is: the embedded journal through a socket to the bot's
SQLite worker (``SqliteRecorder``), the Redis journal with a client of its own. The bot's
process sends one frame first, ``ListenerConfig``; then ``(READY, bool)`` when it starts
or stops taking webhooks. This process sends ``(LISTENING, None)`` or ``(FAILED, why)``
once, then ``(RECORDED, (outcome, entry, conversation_id, key))`` per accepted event and
``(UNAVAILABLE, lost)`` per event it could not record (answered 503; ``lost``: its socket
to the SQLite worker is gone for good, so the bot starts a listener with a new one and
then tells this one to end). It ends when the bot's process closes its socket or ends
(also when killed); what it recorded and answered 200 is in the journal either way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Tuple

from aiohttp import web

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.journal.base import Accepted, Entry, Instance, JournalUnavailable
from rasa_sparkcentral.journal.sqlite_worker import Frames, frame, read_frame
from rasa_sparkcentral.protocol import CHANNEL_NAME, HEALTH_PATH, WEBHOOK_PATH
from rasa_sparkcentral.screening import STOPPING, UNAVAILABLE, screen
from rasa_sparkcentral.signature import signature_of

__all__ = ["Listener", "ListenerConfig", "main"]

logger = logging.getLogger(__name__)

# frame kinds
READY = "ready"
LISTENING = "listening"
FAILED = "failed"
RECORDED = "recorded"
UNAVAILABLE_KIND = "unavailable"


@dataclass(frozen=True)
class ListenerConfig:
    settings: Settings
    instance: Instance
    #: the bot's logging level for this package's loggers
    log_level: int


class Recorder(Protocol):
    async def record_entry(
        self, key: str, conversation_id: str, body: bytes
    ) -> Tuple[Accepted, Optional[Entry]]: ...

    async def close(self) -> None: ...


class Listener:
    """The HTTP side: the webhook and the health check on ``webhook_host:webhook_port``."""

    def __init__(self, config: ListenerConfig, recorder: Recorder, parent: asyncio.Transport):
        self.settings = config.settings
        self.recorder = recorder
        self.parent = parent
        self.ready = True

    def tell(self, kind: str, value: Any) -> None:
        if not self.parent.is_closing():
            self.parent.write(frame((kind, value)))

    async def health(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "stopping"}, status=503)
        return web.json_response({"status": "ok", "channel": CHANNEL_NAME})

    async def receive(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "request body too large"}, status=413)
        screened = screen(self.settings, body, signature_of(request.headers), request.remote)
        event = screened.event
        if event is None:
            return web.json_response(screened.answer, status=screened.status)
        if not self.ready:
            return web.json_response(STOPPING[1], status=STOPPING[0])
        key = event.idempotency_key or f"nokey:{uuid.uuid4().hex}"
        try:
            # recorded even if the request is cancelled meanwhile
            outcome, entry = await asyncio.shield(
                self.recorder.record_entry(key, event.conversation_id, body)
            )
        except JournalUnavailable:
            # lost: the bot starts a listener with a socket to the journal's new worker
            self.tell(UNAVAILABLE_KIND, bool(getattr(self.recorder, "lost", False)))
            return web.json_response(UNAVAILABLE[1], status=UNAVAILABLE[0])
        self.tell(RECORDED, (outcome, entry, event.conversation_id, key))
        return web.json_response({}, status=200)


class _Parent(asyncio.Protocol):
    """The socket to the bot's process: its frames in, ours out."""

    def __init__(self) -> None:
        self.frames = Frames()
        self.closed = asyncio.Event()
        self.listener: Optional[Listener] = None

    def data_received(self, data: bytes) -> None:
        for kind, value in self.frames.feed(data):
            if kind == READY and self.listener is not None:
                self.listener.ready = bool(value)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed.set()


def _recorder(config: ListenerConfig, worker: Optional[socket.socket]) -> Recorder:
    """The embedded journal through the socket to its worker; without one, the Redis
    journal at ``redis_url``."""
    settings = config.settings
    if worker is None:
        from rasa_sparkcentral.journal.redis_backend import RedisJournal

        assert settings.redis_url
        return RedisJournal(
            settings.redis_url,
            instance=config.instance,
            dedup_ttl=settings.dedup_ttl,
            claim_after=settings.claim_after,
        )
    from rasa_sparkcentral.journal.sqlite_backend import SqliteRecorder

    return SqliteRecorder(worker, config.instance, settings.dedup_ttl)


async def serve(
    config: ListenerConfig, parent_socket: socket.socket, worker: Optional[socket.socket]
) -> int:
    loop = asyncio.get_running_loop()
    transport, parent = await loop.create_unix_connection(_Parent, sock=parent_socket)
    recorder = _recorder(config, worker)
    listener = Listener(config, recorder, transport)
    parent.listener = listener
    settings = config.settings
    app = web.Application(client_max_size=settings.max_body_bytes + 1)
    app.router.add_post(WEBHOOK_PATH, listener.receive)
    app.router.add_get(HEALTH_PATH, listener.health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert settings.webhook_port is not None
    try:
        site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port, reuse_port=True)
        await site.start()
    except OSError as e:
        listener.tell(FAILED, str(e))
        await runner.cleanup()
        return 1
    listener.tell(LISTENING, None)
    await parent.closed.wait()
    await runner.cleanup()
    await recorder.close()
    transport.close()
    return 0


def _read_config(sock: socket.socket) -> ListenerConfig:
    """The first frame (the frames after it are read on the event loop)."""
    config = read_frame(sock)
    if not isinstance(config, ListenerConfig):
        raise SystemExit(f"unexpected first frame: {type(config).__name__}")
    return config


def main() -> None:
    # Ctrl-C in a terminal, or a signal to the bot's process group, must not end this
    # process before the bot's own shutdown: the end of the bot's socket ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = socket.socket(fileno=int(sys.argv[1]))
    worker = socket.socket(fileno=int(sys.argv[2])) if sys.argv[2] != "-" else None
    config = _read_config(parent)
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-8s %(name)s  - %(message)s",
    )
    parent.setblocking(False)
    sys.exit(asyncio.run(serve(config, parent, worker)))
