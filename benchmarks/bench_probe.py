"""Benchmark-only helpers loaded into the ``rasa run`` that ``benchmarks/run.py`` starts
(with ``benchmarks/`` on that process's PYTHONPATH). Never configure them in a real bot.

``BenchProbe`` (an input channel, ``GET /webhooks/bench_probe/``) reports what the
Sparkcentral channel holds inside the process: its cache entry counts, the bytes its
in-memory state holds, its REST client's counters, the process's resident memory, how
long Rasa's event loop was blocked (a 5 ms ticker measures how late it wakes up), and the
garbage collections Python ran (count and time per generation). It never touches the
message path; ``?collect=1`` runs a full collection first (between rounds, untimed).

``BoundedTrackerStore`` is Rasa's ``InMemoryTrackerStore`` that forgets the least recently
saved conversations beyond ``max_conversations``: as fast as the default store, but Rasa's
own memory stops growing with the number of conversations, so what still grows is ours.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections import OrderedDict, deque
from typing import Any, Awaitable, Callable, Dict, List, Optional

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

_CONTAINERS = (dict, list, tuple, set, frozenset, deque)


def proc_status() -> Dict[str, int]:
    """VmRSS / VmHWM of this process in kB (Linux)."""
    values: Dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def deep_size(root: Any) -> int:
    """Bytes held by ``root`` and everything reachable through containers and through
    the attributes of ``rasa_sparkcentral`` objects (each object counted once)."""
    seen: set[int] = set()
    stack: List[Any] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)
        elif type(obj).__module__.startswith("rasa_sparkcentral") and hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total


def _find_sparkcentral_channel() -> Optional[Any]:
    for obj in gc.get_objects():
        if type(obj).__name__ == "SparkcentralInput":
            return obj
    return None


class LoopStalls:
    """How late the event loop wakes a 5 ms sleeper: the time it was blocked by others."""

    TICK = 0.005

    def __init__(self) -> None:
        self.samples: List[float] = []
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.TICK)
            late = loop.time() - before - self.TICK
            if len(self.samples) < 1_000_000:
                self.samples.append(max(0.0, late))

    def take(self) -> Dict[str, float]:
        samples, self.samples = sorted(self.samples), []
        if not samples:
            return {}

        def pick(q: float) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))] * 1000

        return {"n": len(samples), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


class GcWatch:
    """Counts Python's garbage collections and their time, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info.get("generation", 0))
        self.counts[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._started

    def report(self) -> Dict[str, List[float]]:
        return {"counts": list(self.counts), "seconds": list(self.seconds)}


class BoundedTrackerStore(InMemoryTrackerStore):
    """``InMemoryTrackerStore`` keeping at most ``max_conversations`` (least recently
    saved forgotten first). Endpoint: ``type: bench_probe.BoundedTrackerStore``."""

    def __init__(
        self,
        domain: Any,
        event_broker: Any = None,
        host: Any = None,
        max_conversations: int = 500,
        **kwargs: Any,
    ) -> None:
        super().__init__(domain, event_broker, **kwargs)
        self.store: OrderedDict[str, str] = OrderedDict()
        self.max_conversations = int(max_conversations)

    async def save(self, tracker: DialogueStateTracker) -> None:
        await super().save(tracker)
        self.store.move_to_end(tracker.sender_id)
        while len(self.store) > self.max_conversations:
            self.store.popitem(last=False)


class BenchProbe(InputChannel):
    """Read-only statistics for the benchmarks (see the module docstring)."""

    def __init__(self) -> None:
        self._channel: Optional[Any] = None
        self._stalls = LoopStalls()
        self._gc = GcWatch()

    @classmethod
    def name(cls) -> str:
        return "bench_probe"

    def _sparkcentral(self) -> Optional[Any]:
        if self._channel is None:
            self._channel = _find_sparkcentral_channel()
        return self._channel

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        probe = Blueprint("bench_probe_webhook", __name__)

        @probe.listener("after_server_start")
        async def start_ticker(app: Any, loop: Any) -> None:
            self._stalls.start()

        @probe.route("/", methods=["GET"])
        async def stats(request: Request) -> HTTPResponse:
            started = time.perf_counter()
            if request.args.get("collect"):
                gc.collect()
            report: Dict[str, Any] = {"process": proc_status(), "gc": self._gc.report()}
            if request.args.get("stalls"):
                report["loop_stalls"] = self._stalls.take()
            channel = self._sparkcentral()
            if channel is not None:
                state = channel.state
                client = channel.client
                given = channel.turns.given_details  # per process, beside the state
                report["sparkcentral"] = {
                    "state_type": type(state).__name__,
                    "cache_entries": {**state.sizes(), "details given": len(given)},
                    "cache_size_setting": channel.settings.cache_size,
                    "state_bytes": (
                        deep_size(state) + deep_size(given) if request.args.get("deep") else None
                    ),
                    "pending_conversations": channel.pending_conversations,
                    "client": vars(client.stats) if client is not None else None,
                }
            agent = getattr(request.app.ctx, "agent", None)
            store = getattr(agent, "tracker_store", None)
            inner = getattr(store, "_tracker_store", store)  # FailSafeTrackerStore wraps it
            report["tracker_store"] = {
                "type": type(inner).__name__,
                "conversations_in_process": len(getattr(inner, "store", {}) or {}),
            }
            report["probe_ms"] = (time.perf_counter() - started) * 1000
            return response.json(report)

        return probe
