"""Helpers for the journal and outbox tests: a throw-away redis-server, and a child
process that uses a journal and can be SIGKILLed (a crashed ``rasa run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

from rasa_sparkcentral.testing import processes as servers

REPO_ROOT = Path(__file__).resolve().parent.parent


def start_redis(tmp: Path) -> servers.ManagedProcess:
    port = servers.free_port()
    process = servers.redis_server(port, tmp / f"redis-{port}", tmp / f"redis-{port}.log")
    process.start()
    process.wait_ready()
    return process


def stop_redis(process: servers.ManagedProcess) -> None:
    if process.pid is not None and process.running:
        os.kill(process.pid, signal.SIGCONT)  # in case a test froze it
    process.stop(grace=2.0)


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.ManagedProcess]:
    """A redis-server of the module's own (outage tests start another one)."""
    process = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield process
    finally:
        stop_redis(process)


class Child:
    """``python -c code`` with this checkout importable; reads its stdout line by line."""

    def __init__(self, code: str, args: List[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, word: str) -> str:
        """The next stdout line, which must start with ``word`` (blocks until it comes)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith(word):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"child said {line!r}, wanted {word!r}; stderr:\n{err}")
        return line

    def kill(self) -> None:
        """SIGKILL: no finally blocks, no lease release, no close."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
