"""The embedded store's SQLite worker: a child process of ``rasa run`` that owns the
journal's file and runs the statements the bot's process sends it (``sqlite_process`` is
the bot's side).

Why a process and not a thread: a thread in the bot's process needs Python's GIL for
every step between two SQLite calls, and while Rasa computes a turn it gets the GIL only
by forcing a switch: measured in a real ``rasa run``, that cost the bot about 2 ms of CPU
per message, more than all SQLite work itself. This process runs beside the bot on
another core and shares no GIL with it; the bot only writes a request to a socket and
reads the answer on its event loop.

The protocol, on stream sockets (one per event loop of the bot's process, each handed
over on the control socket with ``SCM_RIGHTS``): a frame is a 4-byte big-endian length
and a pickle. The control socket carries first ``(path, schemas)`` and then only the
sockets; its end (the bot's process exits or closes the store) ends this process. A
request is ``(call_id, fn, args, alone)``: ``fn(connection, *args)`` with ``fn`` a
module-level function of the package (pickled by name); the answer is
``(call_id, ok, value, batches, calls)``. Requests read in one wake-up share one
transaction (group commit); if that fails, each runs again alone, so that one failing
call fails alone. ``alone`` calls run outside any transaction (a checkpoint).

The file is opened in WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the bot's process and this one being killed (it is in the WAL, handed to the
OS), but the last transactions before an OS crash or power loss may be lost (they are
fsynced only at checkpoints). A lock file next to the database keeps a second process
from using it at the same time.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import selectors
import signal
import socket
import sqlite3
import struct
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

BUSY_TIMEOUT_MS = 2000
WAL_SIZE_LIMIT = 4 * 1024 * 1024
#: At most this many calls share a transaction.
MAX_BATCH = 64
#: How long a new worker waits for the lock of one that is still finishing (a killed
#: bot's worker ends as soon as it sees its control socket closed).
LOCK_WAIT = 3.0

_HEADER = struct.Struct("!I")

#: A request: (call id, fn, args, alone).
Request = Tuple[int, Callable[..., Any], Tuple[Any, ...], bool]


class JournalLocked(RuntimeError):
    """Another process has this journal file open."""


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class Frames:
    """Cuts a byte stream into the messages framed by ``frame``."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List[Any]:
        self._buffer += data
        messages: List[Any] = []
        start = 0
        while len(self._buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, start)
            end = start + _HEADER.size + size
            if len(self._buffer) < end:
                break
            with memoryview(self._buffer) as view:
                messages.append(pickle.loads(view[start + _HEADER.size : end]))
            start = end
        if start:
            del self._buffer[:start]
        return messages


# -- calls any store can send ---------------------------------------------------------


def nothing(conn: sqlite3.Connection) -> None:
    """Opens the file (and proves the worker answers)."""


def query(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(sql, params)]


def execute(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    return conn.execute(sql, params).rowcount


# -- the store --------------------------------------------------------------------------


class Store:
    """One connection to the file; runs requests in shared transactions."""

    def __init__(self, path: Path, schemas: Sequence[str]) -> None:
        self.path = path
        self.schemas = list(schemas)
        self.conn: Optional[sqlite3.Connection] = None
        self._lock_file: Optional[IO[str]] = None
        #: transactions committed and calls run (how well calls are grouped)
        self.batches = 0
        self.calls = 0

    def _lock(self) -> IO[str]:
        lock = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held until close()
        give_up = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= give_up:
                    lock.close()
                    raise JournalLocked(
                        f"{self.path} is in use by another process: give each process its own path"
                    ) from None
                time.sleep(0.05)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getppid()}\n")  # the bot's process, whose store this is
        lock.flush()
        return lock

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._lock()
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        for schema in self.schemas:
            conn.executescript(schema)
        return conn

    def handle(self, requests: List[Request]) -> List[Tuple[bool, Any]]:
        """Each request's outcome, in order: ``alone`` ones outside any transaction,
        the others grouped between them."""
        outcomes: List[Tuple[bool, Any]] = []
        group: List[Request] = []
        for request in requests:
            if request[3]:
                outcomes += self._run(group, transaction=True) if group else []
                outcomes += self._run([request], transaction=False)
                group = []
            else:
                group.append(request)
        if group:
            outcomes += self._run(group, transaction=True)
        return outcomes

    def _run(self, requests: List[Request], *, transaction: bool) -> List[Tuple[bool, Any]]:
        try:
            if self.conn is None:
                self.conn = self._open()
            conn = self.conn
            if transaction:
                conn.execute("BEGIN IMMEDIATE")
            results = [fn(conn, *args) for _, fn, args, _ in requests]
            if transaction:
                conn.execute("COMMIT")
        except Exception as error:  # handed to the caller
            if self.conn is not None and self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if len(requests) > 1:
                return [self._run([r], transaction=transaction)[0] for r in requests]
            return [(False, error)]
        if transaction:
            self.batches += 1
        self.calls += len(requests)
        return [(True, result) for result in results]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _answer(call_id: int, ok: bool, value: Any, store: Store) -> bytes:
    try:
        return frame((call_id, ok, value, store.batches, store.calls))
    except Exception as e:  # an exception or result that does not pickle
        error = RuntimeError(f"{type(value).__name__}: {value}" if not ok else repr(e))
        return frame((call_id, False, error, store.batches, store.calls))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            raise SystemExit(0)  # the bot's process is gone already
        data += more
    return data


def read_frame(sock: socket.socket) -> Any:
    """One frame from a blocking socket, read to its last byte and no further (what
    follows is read otherwise: on the control socket, a byte read past it with plain
    ``recv`` would drop the socket passed with it)."""
    (size,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    return pickle.loads(_read_exactly(sock, size))


def _read_config(control: socket.socket) -> Tuple[str, List[str]]:
    """The first frame on the control socket: the file and its schemas."""
    path, schemas = read_frame(control)
    return str(path), list(schemas)


def serve(control: socket.socket) -> None:
    path, schemas = _read_config(control)
    store = Store(Path(path), schemas)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    readers: Dict[socket.socket, Frames] = {}
    stopping = False
    try:
        while not stopping:
            batch: List[Tuple[socket.socket, Request]] = []
            for key, _ in selector.select():
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is control:
                    message, fds, _, _ = socket.recv_fds(control, 16, 8)
                    if not message:
                        stopping = True  # the bot's process closed the store or is gone
                    for fd in fds:
                        link = socket.socket(fileno=fd)
                        selector.register(link, selectors.EVENT_READ)
                        readers[link] = Frames()
                    continue
                try:
                    data = sock.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    readers.pop(sock, None)
                    sock.close()
                    continue
                batch += [(sock, request) for request in readers[sock].feed(data)]
            for start in range(0, len(batch), MAX_BATCH):
                part = batch[start : start + MAX_BATCH]
                outcomes = store.handle([request for _, request in part])
                answers: Dict[socket.socket, List[bytes]] = {}
                for (sock, request), (ok, value) in zip(part, outcomes):
                    answers.setdefault(sock, []).append(_answer(request[0], ok, value, store))
                for sock, frames in answers.items():
                    try:
                        sock.sendall(b"".join(frames))
                    except OSError:
                        pass  # that loop is gone: no one waits any more
    finally:
        store.close()


def main(argv: Optional[List[str]] = None) -> None:
    # Ctrl-C in a terminal, or a signal to the bot's process group, must not end this
    # process before the bot's own shutdown has finished its calls: the end of the
    # control socket ends it (also when the bot's process is killed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    serve(socket.socket(fileno=int(args[0])))
