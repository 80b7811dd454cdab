"""The bot's side of the embedded store: SQLite calls sent to a worker process
(``sqlite_worker``), awaited on any event loop.

``call(fn, *args)`` sends ``fn(connection, *args)`` to the worker and awaits its result;
``fn`` is a module-level function (it is pickled by name), its arguments and result
plain data. Each event loop that calls gets a socket of its own to the worker, so a call
costs its loop one write and one read and never waits for another thread; another
process (the ``webhook_port`` listener) calls through a socket from ``link_socket``
(``attached``). Calls that reach the worker together share a transaction
(group commit). A call's result, and its ``after`` hook (run on the calling loop before
the caller resumes, even if the caller stopped waiting), come only once its transaction
has committed.

The worker is started on the first call and again on the first call after it died; a
call it did not answer fails with ``JournalUnavailable`` (the caller answers 503 or
retries). It ends when the store is closed or the bot's process ends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union, cast

from rasa_sparkcentral.journal import sqlite_worker
from rasa_sparkcentral.journal.base import JournalUnavailable, OutageLog
from rasa_sparkcentral.journal.sqlite_worker import Frames, JournalLocked, frame

__all__ = ["JournalLocked", "SqliteProcess", "ended", "start_child"]

T = TypeVar("T")

_WORKER = f"from {sqlite_worker.__name__} import main; main()"
#: How long ``close`` waits for calls in flight and then for the worker to end.
CLOSE_WAIT = 10.0


class _WorkerGone(OSError):
    """The worker ended before it answered."""


class _Link(asyncio.Protocol):
    """One event loop's socket to the worker and the calls waiting on it."""

    def __init__(self, owner: SqliteProcess, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieve)  # a link that never connected fails alone
        self.transport: Optional[asyncio.Transport] = None
        self.lost = False
        self.frames = Frames()
        self.waiting: Dict[int, Tuple[asyncio.Future[Any], Optional[Callable[[Any], None]]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        for call_id, ok, value, batches, calls in self.frames.feed(data):
            self.owner.batches, self.owner.calls = batches, calls
            waiting = self.waiting.pop(call_id, None)
            if waiting is None:
                continue
            future, after = waiting
            if ok and after is not None:
                after(value)  # the in-memory copy follows the commit, waited for or not
            if future.done():  # the caller stopped waiting (cancelled)
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(_WorkerGone("the SQLite worker closed the connection"))
        for future, _ in self.waiting.values():
            if not future.done():
                future.set_exception(_WorkerGone("the SQLite worker ended before it answered"))
        self.waiting.clear()

    def send(self, call_id: int, request: bytes, future: asyncio.Future[Any], after: Any) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise _WorkerGone("the SQLite worker is gone")
        self.waiting[call_id] = (future, after)
        self.transport.write(request)


class SqliteProcess:
    def __init__(self, path: Union[str, Path], schema: str, what: str) -> None:
        self.path = Path(path)
        self._schemas = [schema]
        self._what = what
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._control: Optional[socket.socket] = None
        self._links: Dict[asyncio.AbstractEventLoop, _Link] = {}
        self._spawn_lock = threading.Lock()
        self._ids = itertools.count()
        self._workers_started = 0
        #: calls that refresh an owner's in-memory copy when a worker replaces a dead one
        self._reloads: List[Tuple[Callable[[sqlite3.Connection], Any], Callable[[Any], None]]] = []
        self._closed = False
        #: a worker replaced by ``link_socket`` whose reloads this process still owes
        self._replaced_unseen = False
        #: ``attached``: the one socket to another process's worker (never spawned here)
        self._attached: Optional[socket.socket] = None
        self._attached_used = False
        self._outage = OutageLog(what)
        #: transactions committed and calls run by the worker (how well calls group)
        self.batches = 0
        self.calls = 0

    @classmethod
    def attached(cls, sock: socket.socket, what: str) -> SqliteProcess:
        """Calls through ``sock``, a socket to a worker another process started (its
        ``link_socket``), on one event loop. This never starts a worker: once that
        socket is gone, calls fail (``lost``)."""
        db = cls(Path("<the bot's worker>"), "", what)
        db._attached = sock
        return db

    @property
    def lost(self) -> bool:
        """``attached``: its socket to the worker is gone."""
        return self._attached_used and all(link.lost for link in self._links.values())

    def link_socket(self) -> socket.socket:
        """A new socket to the worker (started if it is not running), for another
        process to make calls through (``attached``). Blocks for a worker start."""
        if self._closed:
            raise _WorkerGone(f"sqlite {self.path}: closed")
        sock, replaced = self._socket_for_a_loop()
        if replaced:
            self._replaced_unseen = True  # this process's own link reloads on its next call
        return sock

    @property
    def worker_pid(self) -> Optional[int]:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def add_schema(self, schema: str) -> None:
        """More tables in the same file (the outbox beside the journal: one worker, and
        their calls share transactions). Before the first call only."""
        if self._process is not None:
            raise RuntimeError(f"{self.path} is open already: add schemas before the first call")
        self._schemas.append(schema)

    def on_new_worker(
        self, fn: Callable[[sqlite3.Connection], T], after: Callable[[T], None]
    ) -> None:
        """When a worker replaces one that died, ``fn`` runs first and ``after`` gets its
        result: a call the dead worker committed but never answered left the owner's
        in-memory copy behind (a recorded event it would never run until the next start)."""
        self._reloads.append((fn, after))

    # -- the worker -------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a worker (the previous one, if any, has ended). Under ``_spawn_lock``."""
        if self._control is not None:
            self._control.close()
        if self._process is not None:
            self._process.poll()  # reap it
        ours, theirs = socket.socketpair()
        try:
            self._process = start_child(_WORKER, [theirs])
        finally:
            theirs.close()
        ours.sendall(frame((str(self.path), self._schemas)))
        self._control = ours

    def _socket_for_a_loop(self) -> Tuple[socket.socket, bool]:
        """A new socket to the worker (started if it is not running), and whether the
        worker was started now to replace a dead one."""
        if self._attached is not None:
            if self._attached_used:
                raise _WorkerGone("the SQLite worker's socket is gone")
            self._attached_used = True
            self._attached.setblocking(False)
            return self._attached, False
        replaced = False
        with self._spawn_lock:
            for last_try in (False, True):
                if self._process is None or self._process.poll() is not None:
                    self._spawn()
                    self._workers_started += 1
                    replaced = self._workers_started > 1
                assert self._control is not None and self._process is not None
                ours, theirs = socket.socketpair()
                try:
                    socket.send_fds(self._control, [b"L"], [theirs.fileno()])
                    break
                except OSError:
                    ours.close()
                    if last_try:
                        raise
                    # its control socket is closed, so the worker is ending (killed, say)
                    # though not yet reaped: make sure, then start another
                    self._process.kill()
                    self._process.wait()
                finally:
                    theirs.close()
        ours.setblocking(False)
        return ours, replaced

    async def _link(self) -> _Link:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is None or link.lost:
            link = _Link(self, loop)
            self._links[loop] = link
            try:
                # starting a worker (or waiting for a dead one) blocks for milliseconds:
                # not on the loop
                sock, replaced = await self._in_thread(loop, self._socket_for_a_loop)
                await loop.create_unix_connection(lambda: link, sock=sock)
            except OSError as e:
                link.connection_lost(e)
                raise
            if replaced or self._replaced_unseen:
                self._replaced_unseen = False
                # ahead of any other call on this socket, so answered first
                for fn, after in self._reloads:
                    call_id = next(self._ids)
                    future: asyncio.Future[Any] = loop.create_future()
                    future.add_done_callback(_retrieve)  # no one awaits it
                    link.send(call_id, frame((call_id, fn, (), False)), future, after)
        await asyncio.shield(link.ready)
        return link

    @staticmethod
    async def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
        try:
            future = loop.run_in_executor(None, fn)
        except RuntimeError as e:  # the loop's executor is shut down (the process is ending)
            raise _WorkerGone(f"cannot start the SQLite worker now: {e}") from e
        return await future

    # -- on any event loop ------------------------------------------------------------

    async def open(self) -> None:
        await self.call(sqlite_worker.nothing)

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        after: Optional[Callable[[T], None]] = None,
        alone: bool = False,
    ) -> T:
        """``fn(connection, *args)`` in the worker, inside a transaction shared with the
        calls that reach it together (``alone``: outside any transaction, e.g. a
        checkpoint); ``after(result)`` runs on this loop once it committed. Storage
        errors, and a worker that ended, raise JournalUnavailable."""
        if self._closed:
            raise JournalUnavailable(f"sqlite {self.path}: closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        try:
            link = await self._link()
            call_id = next(self._ids)
            link.send(call_id, frame((call_id, fn, args, alone)), future, after)
            result = await future
        except (sqlite3.Error, OSError) as e:
            self._outage.failed(e)
            raise JournalUnavailable(f"sqlite {self.path}: {e}") from e
        self._outage.succeeded()
        return result

    async def close(self) -> None:
        """Wait for this loop's calls in flight, close every loop's socket, and let the
        worker finish what reached it and end."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        own = self._links.get(loop)
        if own is not None and own.waiting:
            futures = [future for future, _ in own.waiting.values()]
            await asyncio.wait(futures, timeout=CLOSE_WAIT)
        for link in list(self._links.values()):
            if link.transport is None:
                continue
            if link.loop is loop:
                link.transport.close()
            else:
                try:
                    link.loop.call_soon_threadsafe(link.transport.close)
                except RuntimeError:  # that loop is closed: its socket is garbage
                    pass
        with self._spawn_lock:
            if self._control is not None:
                self._control.close()  # the worker's signal to end
                self._control = None
            process = self._process
        if process is None:
            return
        await ended(process, CLOSE_WAIT)


def start_child(code: str, sockets: List[Optional[socket.socket]]) -> subprocess.Popen[bytes]:
    """``python -c code fd...`` with this interpreter, this package importable, and the
    given sockets passed (their descriptors as the arguments; ``-`` for None)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = _import_path()
    return subprocess.Popen(
        [sys.executable, "-c", code, *(str(s.fileno()) if s else "-" for s in sockets)],
        pass_fds=[s.fileno() for s in sockets if s is not None],
        stdin=subprocess.DEVNULL,
        env=env,
    )


async def ended(process: subprocess.Popen[bytes], wait: float) -> Optional[int]:
    """``process``'s exit code once it ended, waited for ``wait`` seconds on the loop;
    then it is killed."""
    give_up = time.monotonic() + wait
    while process.poll() is None and time.monotonic() < give_up:
        await asyncio.sleep(0.01)
    if process.poll() is None:
        process.kill()
        process.wait()
    return process.returncode


def _import_path() -> str:
    """The worker's PYTHONPATH: where this package is, and the directories this process
    imports from beside its interpreter's own (a project, a test folder, whose functions
    may be sent by name); never the interpreter's own (its site-packages), which the
    worker finds by itself and which must stay after the standard library."""
    own = [str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    paths: List[str] = []
    for entry in [str(Path(__file__).resolve().parents[2]), *sys.path]:
        if not entry:
            continue
        resolved = str(Path(entry).resolve())
        if resolved in paths or any(resolved.startswith(prefix + os.sep) for prefix in own):
            continue
        paths.append(resolved)
    return os.pathsep.join(paths)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
