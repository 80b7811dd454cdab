"""Misbehaviour on purpose: errors, rate limits, slow answers and expired tokens."""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, Mapping, Optional

_token_sequence: Iterator[int] = itertools.count(1)


def next_token_sequence() -> int:
    """A process-wide increasing number, given to every issued token."""
    return next(_token_sequence)


@dataclass
class Fault:
    """One planned bad answer."""

    status: int
    kind: str
    """``"fail"``, ``"rate_limit"``, ``"token_fail"``, ``"token_not_json"`` or ``"random"``."""
    retry_after: Optional[float] = None

    def raw_body(self) -> Optional[bytes]:
        """A body that is not JSON (what a proxy's error page looks like), or None."""
        if self.kind == "token_not_json":
            return b"<html><body>502 Bad Gateway (emulated)</body></html>"
        return None

    def body(self) -> Dict[str, Any]:
        if self.status == 429:
            return {"error": "rate_limited", "message": "Too many requests (emulated)"}
        return {"error": "emulated_failure", "message": f"Emulated {self.kind} fault"}

    def headers(self) -> Dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": _format_seconds(self.retry_after)}


@dataclass
class _Planned:
    fault: Fault
    remaining: int


class FaultPlan:
    """What the emulator does wrong on purpose.

    Counters are consumed one per matching request, in the order they were planned:
    ``fail_next(2); rate_limit_next(1)`` makes the next three REST calls answer 503, 503, 429.
    "REST calls" are the conversation and attachment endpoints; the token endpoint has its
    own counter (``token_fail_next``). Faulted requests are recorded with their status but
    not applied.

    Attributes (settable):

    - ``delay``: seconds to wait before answering every REST call;
    - ``token_delay``: the same for the token endpoint;
    - ``fail_rate``: probability (0..1) that a REST call answers ``random_status`` (503),
      drawn from a ``random.Random`` seeded with ``seed`` (setting ``seed`` re-seeds).
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        token_delay: float = 0.0,
        fail_rate: float = 0.0,
        random_status: int = 503,
        seed: int = 0,
    ) -> None:
        self.delay = delay
        self.token_delay = token_delay
        self.fail_rate = fail_rate
        self.random_status = random_status
        self._seed = seed
        self._random = random.Random(seed)
        self._rest: Deque[_Planned] = deque()
        self._token: Deque[_Planned] = deque()
        self.token_cutoff = 0
        """Tokens with a sequence number up to this one are invalid (see expire_tokens)."""
        self.injected = 0
        """How many faults were served so far."""

    # -- planning -----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = value
        self._random = random.Random(value)

    def fail_next(self, n: int = 1, status: int = 503) -> FaultPlan:
        """The next ``n`` REST calls answer ``status``."""
        self._plan(self._rest, Fault(status=status, kind="fail"), n)
        return self

    def rate_limit_next(self, n: int = 1, retry_after: Optional[float] = 1.0) -> FaultPlan:
        """The next ``n`` REST calls answer 429 with ``Retry-After: retry_after`` (seconds)."""
        self._plan(self._rest, Fault(status=429, kind="rate_limit", retry_after=retry_after), n)
        return self

    def token_fail_next(self, n: int = 1, status: int = 503) -> FaultPlan:
        """The next ``n`` token requests answer ``status``."""
        self._plan(self._token, Fault(status=status, kind="token_fail"), n)
        return self

    def token_not_json_next(self, n: int = 1) -> FaultPlan:
        """The next ``n`` token requests answer 200 with an HTML body, not JSON."""
        self._plan(self._token, Fault(status=200, kind="token_not_json"), n)
        return self

    def expire_tokens(self) -> FaultPlan:
        """Every token issued so far becomes invalid (401) until a new one is fetched."""
        self.token_cutoff = next_token_sequence()
        return self

    def reset(self) -> FaultPlan:
        """Forget every planned fault, delay and failure rate (tokens stay as they are)."""
        self._rest.clear()
        self._token.clear()
        self.delay = 0.0
        self.token_delay = 0.0
        self.fail_rate = 0.0
        self.seed = self._seed
        return self

    @staticmethod
    def _plan(queue: Deque[_Planned], fault: Fault, n: int) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        if n:
            queue.append(_Planned(fault=fault, remaining=n))

    # -- state ---------------------------------------------------------------------------
    @property
    def pending_rest(self) -> int:
        return sum(p.remaining for p in self._rest)

    @property
    def pending_token(self) -> int:
        return sum(p.remaining for p in self._token)

    def token_valid(self, sequence: int) -> bool:
        return sequence > self.token_cutoff

    # -- consumption (called by the server) ----------------------------------------------
    def take_rest_fault(self) -> Optional[Fault]:
        fault = self._take(self._rest)
        if fault is None and self.fail_rate > 0 and self._random.random() < self.fail_rate:
            fault = Fault(status=self.random_status, kind="random")
        if fault is not None:
            self.injected += 1
        return fault

    def take_token_fault(self) -> Optional[Fault]:
        fault = self._take(self._token)
        if fault is not None:
            self.injected += 1
        return fault

    @staticmethod
    def _take(queue: Deque[_Planned]) -> Optional[Fault]:
        if not queue:
            return None
        planned = queue[0]
        planned.remaining -= 1
        if planned.remaining <= 0:
            queue.popleft()
        return planned.fault

    # -- JSON (admin endpoint) -----------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return {
            "delay": self.delay,
            "tokenDelay": self.token_delay,
            "failRate": self.fail_rate,
            "randomStatus": self.random_status,
            "seed": self._seed,
            "pendingRest": [
                {
                    "status": p.fault.status,
                    "kind": p.fault.kind,
                    "count": p.remaining,
                    "retryAfter": p.fault.retry_after,
                }
                for p in self._rest
            ],
            "pendingToken": [
                {"status": p.fault.status, "kind": p.fault.kind, "count": p.remaining}
                for p in self._token
            ],
            "injected": self.injected,
        }

    def apply_dict(self, spec: Mapping[str, Any]) -> FaultPlan:
        """Update from a JSON object (camelCase or snake_case keys).

        Keys: ``reset`` (bool, applied first), ``delay``, ``tokenDelay``, ``failRate``,
        ``randomStatus``, ``seed``, ``failNext`` (int or ``{"count", "status"}``),
        ``rateLimitNext`` (int or ``{"count", "retryAfter"}``), ``tokenFailNext``
        (int or ``{"count", "status"}``), ``tokenNotJsonNext`` (int), ``expireTokens`` (bool).
        """
        norm = {_snake(k): v for k, v in spec.items()}
        unknown = set(norm) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        if norm.get("reset"):
            self.reset()
        if "delay" in norm:
            self.delay = _number(norm["delay"], "delay")
        if "token_delay" in norm:
            self.token_delay = _number(norm["token_delay"], "tokenDelay")
        if "fail_rate" in norm:
            rate = _number(norm["fail_rate"], "failRate")
            if not 0.0 <= rate <= 1.0:
                raise ValueError("failRate must be between 0 and 1")
            self.fail_rate = rate
        if "random_status" in norm:
            self.random_status = int(_number(norm["random_status"], "randomStatus"))
        if "seed" in norm:
            self.seed = int(_number(norm["seed"], "seed"))
        if "fail_next" in norm:
            count, opts = _count_spec(norm["fail_next"], "failNext")
            self.fail_next(count, status=int(opts.get("status", 503)))
        if "rate_limit_next" in norm:
            count, opts = _count_spec(norm["rate_limit_next"], "rateLimitNext")
            retry = opts.get("retry_after", opts.get("retryAfter", 1.0))
            self.rate_limit_next(count, retry_after=None if retry is None else float(retry))
        if "token_fail_next" in norm:
            count, opts = _count_spec(norm["token_fail_next"], "tokenFailNext")
            self.token_fail_next(count, status=int(opts.get("status", 503)))
        if "token_not_json_next" in norm:
            count, _ = _count_spec(norm["token_not_json_next"], "tokenNotJsonNext")
            self.token_not_json_next(count)
        if norm.get("expire_tokens"):
            self.expire_tokens()
        return self


_KNOWN_KEYS = {
    "reset",
    "delay",
    "token_delay",
    "fail_rate",
    "random_status",
    "seed",
    "fail_next",
    "rate_limit_next",
    "token_fail_next",
    "token_not_json_next",
    "expire_tokens",
}


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return float(value)


def _count_spec(value: Any, name: str) -> tuple[int, Dict[str, Any]]:
    if isinstance(value, dict):
        count = value.get("count", value.get("n", 1))
        return int(_number(count, f"{name}.count")), value
    return int(_number(value, name)), {}


def _format_seconds(seconds: float) -> str:
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{seconds:g}"
