"""A logger for things that can arrive in floods (rejected webhooks): at most ``burst``
lines per ``period`` seconds, then one line saying how many were left out."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class BoundedLog:
    def __init__(self, logger: logging.Logger, *, burst: int = 10, period: float = 60.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._window = 0.0
        self._count = 0
        self._dropped = 0
        self._lock = threading.Lock()  # any thread may log

    def log(self, level: int, msg: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._window >= self._period:
                if self._dropped:
                    self._logger.log(
                        level, "%d more rejected webhooks were not logged", self._dropped
                    )
                self._window, self._count, self._dropped = now, 0, 0
            self._count += 1
            if self._count > self._burst:
                self._dropped += 1
                return
        self._logger.log(level, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)
