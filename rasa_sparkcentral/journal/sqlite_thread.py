"""One SQLite connection owned by one dedicated thread, callable from any event loop, with
group commit.

SQLite calls block, so they never run on an event loop: ``call(fn)`` queues
``fn(connection)`` for the connection's own thread and awaits its result. Rasa's loop and
the ``webhook_port`` listener's loop can both await it. The thread takes every call queued
by the time it wakes and runs them in ONE transaction (``BEGIN IMMEDIATE`` … ``COMMIT``),
then hands each loop its results in one wake-up. Under load that saves the bot's event
loop most of the thread switches (each of which costs a handover of Python's GIL while
Rasa computes) and the disk most of the commits. A call's results (and its ``after``
hook, run on the thread) come only once its transaction has committed; if a batch fails,
its calls are run again one by one, so that one failing call fails alone.

The file is opened in WAL mode with ``synchronous=NORMAL``: a committed transaction
survives the process being killed (it is in the WAL, handed to the OS), but the last
transactions before an OS crash or power loss may be lost (they are fsynced only at
checkpoints). A lock file next to the database keeps a second process from using it at
the same time (leases are in-process).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from rasa_sparkcentral.journal.base import JournalUnavailable, OutageLog

T = TypeVar("T")

BUSY_TIMEOUT_MS = 2000
WAL_SIZE_LIMIT = 4 * 1024 * 1024
#: At most this many calls share a transaction.
MAX_BATCH = 64


class JournalLocked(RuntimeError):
    """Another process has this journal file open."""


@dataclass
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    after: Optional[Callable[[Any], None]]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    #: run outside any transaction (a checkpoint, VACUUM)
    alone: bool = False


#: A call's outcome: (True, result) or (False, the exception it raised).
_Outcome = Tuple[bool, Any]


def _resolve(outcomes: List[Tuple[asyncio.Future[Any], _Outcome]]) -> None:
    """On the caller's loop: hand each waiting call its outcome."""
    for future, (ok, value) in outcomes:
        if future.done():  # the caller gave up waiting (cancelled)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SqliteThread:
    def __init__(self, path: Union[str, Path], schema: str, what: str) -> None:
        self.path = Path(path)
        self._schemas = [schema]
        self._what = what
        self._queue: queue.SimpleQueue[Optional[_Call]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._conn: Optional[sqlite3.Connection] = None
        self._lock_file: Optional[IO[str]] = None
        self._outage = OutageLog(what)
        #: transactions committed and calls run (how well calls are grouped)
        self.batches = 0
        self.calls = 0

    # -- on the SQLite thread ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise JournalLocked(
                f"{self.path} is in use by another process: give each process its own path"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock_file = lock
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        for schema in self._schemas:
            conn.executescript(schema)
        return conn

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            outcomes: List[_Outcome] = []
            group: List[_Call] = []
            for call in batch:
                if call.alone:
                    outcomes += self._run(group, transaction=True) if group else []
                    outcomes += self._run([call], transaction=False)
                    group = []
                else:
                    group.append(call)
            if group:
                outcomes += self._run(group, transaction=True)
            by_loop: Dict[asyncio.AbstractEventLoop, List[Tuple[asyncio.Future[Any], _Outcome]]] = (
                defaultdict(list)
            )
            for call, outcome in zip(batch, outcomes):
                by_loop[call.loop].append((call.future, outcome))
            for loop, resolved in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, resolved)
                except RuntimeError:  # that loop is closed: no one waits any more
                    pass
            if stop:
                break
        self._close_connection()

    def _run(self, calls: List[_Call], *, transaction: bool) -> List[_Outcome]:
        """Run the calls in one transaction (``transaction``) or outside any; after a
        failure, each again on its own, so that one failing call fails alone."""
        try:
            if self._conn is None:
                self._conn = self._open()
            conn = self._conn
            if transaction:
                conn.execute("BEGIN IMMEDIATE")
            results = [call.fn(conn) for call in calls]
            if transaction:
                conn.execute("COMMIT")
        except BaseException as error:  # handed to the caller
            if self._conn is not None and self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if len(calls) > 1:
                return [self._run([call], transaction=transaction)[0] for call in calls]
            return [(False, error)]
        if transaction:
            self.batches += 1
        self.calls += len(calls)
        outcomes: List[_Outcome] = []
        for call, result in zip(calls, results):
            if call.after is not None:
                call.after(result)
            outcomes.append((True, result))
        return outcomes

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- on any event loop ------------------------------------------------------------

    def add_schema(self, schema: str) -> None:
        """More tables in the same file (the outbox beside the journal: one thread, one
        connection, and their calls share transactions). Before the first call only."""
        if self._thread is not None:
            raise RuntimeError(f"{self.path} is open already: add schemas before the first call")
        self._schemas.append(schema)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._serve, name=self._what, daemon=True)
                thread.start()
                self._thread = thread

    async def open(self) -> None:
        await self.call(lambda conn: None)

    async def call(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        after: Optional[Callable[[T], None]] = None,
        alone: bool = False,
    ) -> T:
        """``fn(connection)`` on the SQLite thread, inside a transaction shared with the
        calls queued beside it (``alone``: outside any transaction, e.g. a checkpoint);
        ``after(result)`` runs on that thread once it committed. Storage errors raise
        JournalUnavailable."""
        if self._closed:
            raise JournalUnavailable(f"sqlite {self.path}: closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(fn, after, future, loop, alone))
        self._ensure_thread()
        try:
            result = await future
        except (sqlite3.Error, OSError) as e:
            self._outage.failed(e)
            raise JournalUnavailable(f"sqlite {self.path}: {e}") from e
        self._outage.succeeded()
        return result

    async def close(self) -> None:
        """Finish the queued calls, close the connection, stop the thread."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
