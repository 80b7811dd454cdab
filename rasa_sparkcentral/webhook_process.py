"""The bot's side of the ``webhook_port`` listener (``webhook_listener``, a child process):
starts it, tells it when to stop taking webhooks, hands what it recorded to the journal
and wakes the conversation, and starts it again if it ends on its own.

Rasa's NLU and policies run on the event loop that also serves ``rasa run``'s HTTP port:
under load, a webhook there waits for whatever Rasa is computing. With ``webhook_port``
the listener answers within milliseconds whatever the bot is doing, and costs Rasa's loop
one small read per accepted event.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from typing import Any, Callable, Optional, Tuple, cast

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.journal import Accepted, Entry, Journal, SqliteJournal
from rasa_sparkcentral.journal.sqlite_process import ended, start_child
from rasa_sparkcentral.journal.sqlite_worker import Frames, frame
from rasa_sparkcentral.webhook_listener import (
    FAILED,
    LISTENING,
    READY,
    RECORDED,
    UNAVAILABLE_KIND,
    ListenerConfig,
)

__all__ = ["WebhookProcess"]

logger = logging.getLogger(__name__)

_MAIN = "from rasa_sparkcentral.webhook_listener import main; main()"
#: How long ``start`` waits for the listener to listen, and ``stop`` for it to end.
START_WAIT = 20.0
STOP_WAIT = 10.0
#: Waits before starting a listener that ended on its own again (doubling, at most).
RESTART_FIRST, RESTART_MAX = 0.2, 5.0

#: Called on Rasa's loop per event the listener accepted: (conversation id, outcome, key).
OnRecorded = Callable[[str, Accepted, str], None]


class _Child(asyncio.Protocol):
    """One listener process and the socket to it."""

    def __init__(self, owner: WebhookProcess, process: subprocess.Popen[bytes]) -> None:
        self.owner = owner
        self.process = process
        self.frames = Frames()
        loop = asyncio.get_running_loop()
        self.first: asyncio.Future[Tuple[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        for kind, value in self.frames.feed(data):
            if kind in (LISTENING, FAILED):
                if not self.first.done():
                    self.first.set_result((kind, value))
            elif kind == RECORDED:
                self.owner.recorded(*value)
            elif kind == UNAVAILABLE_KIND:
                self.owner.unavailable(self, lost=bool(value))

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.first.done():
            self.first.set_result((FAILED, "the listener ended before it listened"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(message))

    def close(self) -> None:
        """The listener's signal to end."""
        if self.transport is not None:
            self.transport.close()

    async def ended(self) -> Optional[int]:
        """Its exit code, once it ended (killed after ``STOP_WAIT``)."""
        return await ended(self.process, STOP_WAIT)


class WebhookProcess:
    """Serves ``POST /webhooks/sparkcentral/webhook`` (and the health check) on
    ``webhook_host:webhook_port`` from a child process recording into ``journal``.

    A listener that ends on its own is started again; one that lost its socket to the
    embedded journal's worker (which ended) answers 503 until another, with a socket
    to the new worker, listens beside it (``SO_REUSEPORT``); then it is told to end."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        on_recorded: OnRecorded,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self._on_recorded = on_recorded
        self._child: Optional[_Child] = None
        self._watcher: Optional[asyncio.Task[None]] = None
        self._replacing: Optional[asyncio.Task[None]] = None
        self._next_replacement = 0.0
        self._ready = True
        self._stopped = False
        #: listeners started (the first included)
        self.starts = 0

    @property
    def pid(self) -> Optional[int]:
        child = self._child
        return child.process.pid if child is not None and child.process.poll() is None else None

    def recorded(self, outcome: Accepted, entry: Optional[Entry], cid: str, key: str) -> None:
        self.journal.adopt(outcome, entry)
        self._on_recorded(cid, outcome, key)

    def unavailable(self, child: _Child, lost: bool) -> None:
        self.journal.count_unavailable()
        if lost and child is self._child and not self._stopped:
            now = time.monotonic()
            if self._replacing is None and now >= self._next_replacement:
                self._next_replacement = now + RESTART_FIRST
                self._replacing = asyncio.get_running_loop().create_task(self._replace(child))

    async def start(self) -> None:
        """Start the listener and wait until it listens; raises when it cannot."""
        self._child = await self._start_one()
        logger.info(
            "Sparkcentral webhook also served on http://%s:%d/webhooks/sparkcentral/webhook "
            "(by process %s)",
            self.settings.webhook_host,
            self.settings.webhook_port,
            self.pid,
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def set_ready(self, ready: bool) -> None:
        """False: the listener answers 503 to new webhooks and its health check."""
        self._ready = ready
        if self._child is not None:
            self._child.send((READY, ready))

    async def stop(self) -> None:
        """Stop listening; the listener ends (what it recorded stays in the journal)."""
        self._stopped = True
        for task in (self._watcher, self._replacing):
            if task is not None:
                task.cancel()
        child = self._child
        if child is not None:
            child.close()
            await child.ended()

    # -- one listener ---------------------------------------------------------------

    async def _start_one(self) -> _Child:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        worker: Optional[socket.socket] = None
        try:
            if isinstance(self.journal, SqliteJournal):
                # starting the journal's worker (if it is not running) blocks: not on the loop
                worker = await loop.run_in_executor(None, self.journal.db.link_socket)
            process = start_child(_MAIN, [theirs, worker])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            if worker is not None:
                worker.close()
        self.starts += 1
        child = _Child(self, process)
        ours.setblocking(False)
        await loop.create_unix_connection(lambda: child, sock=ours)
        child.send(
            ListenerConfig(
                settings=self.settings,
                instance=self.journal.instance,
                log_level=logging.getLogger("rasa_sparkcentral").getEffectiveLevel(),
            )
        )
        if not self._ready:
            child.send((READY, False))
        try:
            kind, why = await asyncio.wait_for(asyncio.shield(child.first), START_WAIT)
        except asyncio.TimeoutError:
            kind, why = FAILED, f"it did not listen within {START_WAIT:.0f} s"
        if kind != LISTENING:
            child.close()
            await child.ended()
            raise RuntimeError(
                f"the Sparkcentral webhook listener could not listen on "
                f"{self.settings.webhook_host}:{self.settings.webhook_port}: {why}"
            )
        return child

    async def _replace(self, old: _Child) -> None:
        """A listener with a socket to the journal's current worker, then the old one
        (whose worker ended) told to end. Where none can start (the journal is closed),
        the old one goes on answering 503."""
        try:
            new = await self._start_one()
        except (OSError, RuntimeError) as e:
            logger.debug("No new Sparkcentral webhook listener: %s", e)
            return
        finally:
            self._replacing = None
        if self._stopped:
            new.close()
            return
        self._child = new
        old.close()
        await old.ended()

    async def _watch(self) -> None:
        """Start another listener when the current one ends while the bot runs."""
        wait = RESTART_FIRST
        while not self._stopped:
            child = self._child
            assert child is not None
            await child.closed
            if self._stopped or child is not self._child:
                continue  # stopping, or replaced meanwhile
            code = await child.ended()
            logger.warning(
                "The Sparkcentral webhook listener on port %s ended (exit code %s); "
                "starting another",
                self.settings.webhook_port,
                code,
            )
            while not self._stopped:
                await asyncio.sleep(wait)
                try:
                    self._child = await self._start_one()
                    wait = RESTART_FIRST
                    break
                except (OSError, RuntimeError) as e:
                    wait = min(wait * 2, RESTART_MAX)
                    logger.error("The Sparkcentral webhook listener did not start: %s", e)
