"""One SQLite connection owned by one dedicated thread, callable from any event loop.

SQLite calls block, so they never run on an event loop: every call is a function of the
connection, run by a single-worker executor (which also orders them). Rasa's loop and the
``webhook_port`` listener's loop can both await it. The file is opened in WAL mode with
``synchronous=NORMAL``: a committed transaction survives the process being killed (it is
in the WAL, handed to the OS), but the last transactions before an OS crash or power
loss may be lost (they are fsynced only at checkpoints). A lock file next to the database
keeps a second process from using it at the same time (leases are in-process).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Callable, Optional, TypeVar, Union

from rasa_sparkcentral.journal.base import JournalUnavailable, OutageLog

T = TypeVar("T")

BUSY_TIMEOUT_MS = 2000
WAL_SIZE_LIMIT = 4 * 1024 * 1024


class JournalLocked(RuntimeError):
    """Another process has this journal file open."""


class SqliteThread:
    def __init__(self, path: Union[str, Path], schema: str, what: str) -> None:
        self.path = Path(path)
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=what)
        self._conn: Optional[sqlite3.Connection] = None
        self._lock_file: Optional[IO[str]] = None
        self._outage = OutageLog(what)

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
        conn.executescript(self._schema)
        return conn

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open()
        try:
            return fn(self._conn)
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        await self.call(lambda conn: None)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the SQLite thread; storage errors raise JournalUnavailable."""
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, self._run, fn)
        except (sqlite3.Error, OSError) as e:
            self._outage.failed(e)
            raise JournalUnavailable(f"sqlite {self.path}: {e}") from e
        except RuntimeError as e:  # the executor was shut down
            if isinstance(e, JournalLocked):
                raise
            raise JournalUnavailable(f"sqlite {self.path}: closed") from e
        self._outage.succeeded()
        return result

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        except RuntimeError:
            return  # closed already
        self._executor.shutdown(wait=False)
