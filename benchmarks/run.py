"""Benchmarks: the Sparkcentral channel against Rasa's built-in REST channel, in one run.

    .venv/bin/python benchmarks/run.py            # the full run (about 10 minutes)
    .venv/bin/python benchmarks/run.py --quick    # a short run (about 1.5 minutes)

Starts the Sparkcentral emulator and the load generator in this process, the example bot's
action server and ONE ``rasa run`` serving both the Sparkcentral channel (its replies go to
the emulator) and Rasa's REST channel, with the same model, loaded once. Then:

1. Throughput and latency. At 1, 10 and 100 concurrent conversations, rounds alternate
   REST, Sparkcentral (webhooks to Rasa's port), Sparkcentral (webhooks to the channel's
   own ``webhook_port`` listener), REST... Each round starts fresh conversations with
   the same untimed first turn ("hi"; Sparkcentral: CONVERSATION_STARTED first); they
   join 25 ms apart and each asks question after question (closed loop: the next when
   the previous answer arrived) until the round's time is up. Every question has
   exactly one deterministic answer, which is checked. A Sparkcentral message is done
   when the emulator received its reply; a REST message when the HTTP response returned.
   Messages/s and latencies are taken while every conversation of the round is talking.
2. Memory. Rasa's resident memory (``/proc/PID/status`` VmRSS) before and after distinct
   conversations: first a REST control (the same Rasa work without our channel), then
   10,000 Sparkcentral conversations (CONVERSATION_STARTED and a first message each).
   The channel's caches are read from inside the process by ``benchmarks/bench_probe.py``.
3. OAuth2 token requests and TCP connections, counted by the emulator.

Prints one table (each figure next to its target, PASS/MISS) and writes it to
``benchmarks/results/latest.md``. Exits 0 when the run completed, whatever the figures
(it is a report); 1 when the run itself broke. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

# `python benchmarks/run.py` with an interpreter that lacks Rasa: use the project's venv
# (the servers are started with this very interpreter).
_IN_VENV = Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()
if importlib.util.find_spec("rasa") is None and VENV_PYTHON.exists() and not _IN_VENV:
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
if str(REPO_ROOT) not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from rasa_sparkcentral.config import Settings  # noqa: E402
from rasa_sparkcentral.inbound import message_metadata  # noqa: E402
from rasa_sparkcentral.protocol import (  # noqa: E402
    CREDENTIALS_KEY,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
    ChannelDetails,
    parse_event,
)
from rasa_sparkcentral.testing import processes  # noqa: E402
from rasa_sparkcentral.testing.emulator import (  # noqa: E402
    EVENT_INBOUND_MESSAGE_RECEIVED,
    EmulatorEvent,
    SparkcentralEmulator,
    build_envelope,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
    encode_envelope,
    new_conversation_id,
)
from rasa_sparkcentral.testing.emulator.models import SENDER_BOT  # noqa: E402
from rasa_sparkcentral.testing.stack import BotStack  # noqa: E402

BOT_DIR = REPO_ROOT / "example_bot"
MODEL = BOT_DIR / "models" / "example_bot.tar.gz"
RESULTS = BENCH_DIR / "results" / "latest.md"

SC_PATH = WEBHOOK_PATH
REST_PATH = "/webhooks/rest/webhook"
PROBE_PATH = "/webhooks/bench_probe/"
REST = "REST"
REST_MD = "REST + metadata"  # Rasa's REST channel carrying the metadata our channel attaches
SC = "Sparkcentral"
SC_PORT = "SC webhook_port"  # the same channel, webhooks sent to its own listener

REPLY_TIMEOUT = 60.0
THROUGHPUT_RATIO_TARGET = 0.9
ACK_P99_TARGET_MS = 20.0
ACK_TARGET_LEVEL = 100
MEMORY_NOISE_MB = 5.0
MEMORY_WINDOW = 50  # conversations in flight during the memory phase
TRACKERS_KEPT = 500  # BoundedTrackerStore: Rasa keeps at most this many conversations
MEDIUM = "smooch-rtm"
STAGGER = 0.025  # seconds between the first questions of a round's conversations


def _load_domain_texts() -> Dict[str, str]:
    domain = yaml.safe_load((BOT_DIR / "domain.yml").read_text(encoding="utf-8"))
    return {name: str(variants[0]["text"]) for name, variants in domain["responses"].items()}


TEXTS = _load_domain_texts()
GREETING = TEXTS["utter_greet"]
# Questions with exactly one deterministic answer (rules in example_bot/data/rules.yml).
MESSAGES: List[Tuple[str, str]] = [
    ("what are your opening hours?", TEXTS["utter_opening_hours"]),
    ("how long does shipping take?", TEXTS["utter_shipping"]),
]


class BenchError(RuntimeError):
    """The run itself broke (a server, a lost reply, a wrong answer): exit 1."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Level:
    concurrency: int
    seconds: float  # how long the conversations of a round keep asking


@dataclass(frozen=True)
class Plan:
    levels: Tuple[Level, ...]
    pairs: int  # REST + Sparkcentral round pairs per level
    memory_conversations: int
    control_conversations: int


FULL = Plan(
    levels=(Level(1, 4.0), Level(10, 5.0), Level(100, 8.0)),
    pairs=3,
    memory_conversations=10_000,
    control_conversations=1_000,
)
QUICK = Plan(
    levels=(Level(1, 0.5), Level(10, 1.5), Level(100, 5.0)),
    pairs=2,
    memory_conversations=1_000,
    control_conversations=300,
)


# --------------------------------------------------------------------------- measuring


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class RoundResult:
    channel: str
    concurrency: int
    messages: int = 0  # the whole round (for CPU per message)
    seconds: float = 0.0
    rasa_cpu: float = 0.0
    window_messages: int = 0  # while every conversation of the round was talking
    window_seconds: float = 0.0
    ack: List[float] = field(default_factory=list)  # Sparkcentral only
    e2e: List[float] = field(default_factory=list)
    stalls: Dict[str, float] = field(default_factory=dict)  # rasa's event loop
    full_gcs: int = 0  # Python's generation-2 collections in rasa during the round
    full_gc_seconds: float = 0.0

    @property
    def rate(self) -> float:
        if self.window_seconds > 0:
            return self.window_messages / self.window_seconds
        return self.messages / self.seconds if self.seconds > 0 else math.nan


class ReplyWatch:
    """Resolves a future when the emulator records the bot's next message in a
    conversation (an emulator listener: no polling)."""

    def __init__(self, emu: SparkcentralEmulator) -> None:
        self.counts: Dict[str, int] = {}
        self.total = 0
        self._waiting: Dict[str, Tuple[int, asyncio.Future[Tuple[float, str]]]] = {}
        emu.add_listener(self._on_event)

    def _on_event(self, event: EmulatorEvent) -> None:
        entry = event.entry
        cid = event.conversation_id
        if event.kind != "transcript" or entry is None or cid is None:
            return
        if entry.sender != SENDER_BOT:
            return
        self.total += 1
        count = self.counts.get(cid, 0) + 1
        self.counts[cid] = count
        waiting = self._waiting.get(cid)
        if waiting is not None and count >= waiting[0] and not waiting[1].done():
            waiting[1].set_result((time.perf_counter(), entry.text or ""))
            del self._waiting[cid]

    def expect(self, cid: str) -> asyncio.Future[Tuple[float, str]]:
        """A future for the next bot message in ``cid`` (register before sending)."""
        future: asyncio.Future[Tuple[float, str]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = (self.counts.get(cid, 0) + 1, future)
        return future

    def forget(self, cid: str) -> None:
        self.counts.pop(cid, None)
        self._waiting.pop(cid, None)


class Ticker:
    """A periodic sampler running on this process's event loop."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.tick(max(0.0, loop.time() - before - self.interval))

    def tick(self, late: float) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class LoopLag(Ticker):
    """How late this process's event loop wakes up: the load generator's own delay."""

    def __init__(self) -> None:
        super().__init__(0.01)
        self.samples: List[float] = []

    def tick(self, late: float) -> None:
        self.samples.append(late)

    def take(self) -> List[float]:
        samples, self.samples = self.samples, []
        return samples


class ConnectionPeak(Ticker):
    """The most TCP connections to the emulator open at once."""

    def __init__(self, emu: SparkcentralEmulator) -> None:
        super().__init__(0.05)
        self.emu = emu
        self.peak = 0

    def tick(self, late: float) -> None:
        self.peak = max(self.peak, self.emu.connections_open)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The running servers (one ``BotStack``) and what the report says about them."""

    bot: BotStack
    channel_settings: Dict[str, Any]
    tracker_store: str
    startup_seconds: float
    thread_port: Optional[int] = None

    @property
    def emulator(self) -> SparkcentralEmulator:
        return self.bot.emulator

    @property
    def log_dir(self) -> Path:
        return self.bot.log_dir

    @property
    def rasa_url(self) -> str:
        return self.bot.rasa_url

    @property
    def rasa_pid(self) -> int:
        pid = self.bot.rasa.pid
        assert pid is not None
        return pid

    @property
    def greets(self) -> bool:
        """Whether CONVERSATION_STARTED makes the bot answer (a start intent is set)."""
        return bool(self.channel_settings.get("conversation_started_intent"))

    async def stop(self) -> None:
        await self.bot.stop()


def _tracker_store(kind: str, log_dir: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """The tracker store endpoint (None: Rasa's default, or Redis started by the stack)."""
    if kind == "bounded":
        store = {"type": "bench_probe.BoundedTrackerStore", "max_conversations": TRACKERS_KEPT}
        return store, f"in memory, at most {TRACKERS_KEPT} conversations kept"
    if kind == "memory":
        return None, "InMemoryTrackerStore (Rasa's default, keeps every conversation)"
    if kind == "sql":
        store = {"type": "SQL", "dialect": "sqlite", "db": str(log_dir / "trackers.db")}
        return store, "SQL (SQLite file)"
    return None, "Redis"


async def start_stack(args: argparse.Namespace, log_dir: Path) -> Stack:
    if not MODEL.exists():
        raise BenchError(f"no trained model at {MODEL}: run `make train` first")
    started = time.perf_counter()
    tracker_store, store_name = _tracker_store(args.tracker_store, log_dir)
    settings: Dict[str, Any] = {
        "cache_size": args.cache_size,
        # CONVERSATION_STARTED costs one Rasa turn (/restart) instead of two (+ /greet):
        # 10,000 conversations fit in the time budget. --set conversation_started_intent=greet
        "conversation_started_intent": None,
    }
    thread_port: Optional[int] = None
    if args.webhook_port_variant:
        thread_port = processes.free_port()
        settings["webhook_port"] = thread_port
        settings["webhook_host"] = "127.0.0.1"
    settings.update(args.channel_settings)
    pythonpath = [str(REPO_ROOT), str(BENCH_DIR)]
    if os.environ.get("PYTHONPATH"):
        pythonpath.append(os.environ["PYTHONPATH"])
    bot = BotStack(
        bot_dir=BOT_DIR,
        model=MODEL,
        log_dir=log_dir,
        channel_settings=settings,
        emulator_options={"token_lifetime": args.token_lifetime, "max_calls": 2_000},
        redis=args.tracker_store == "redis",
        redis_lock_store=False,  # Rasa's in-memory lock store, as with the other stores
        redis_key_prefix="bench",
        tracker_store=tracker_store,
        rest_channel=True,  # the control: Rasa's REST channel in the same process
        credentials_key=args.channel_class,  # a variant to compare (experiments)
        extra_credentials={"bench_probe.BenchProbe": None},  # read-only statistics
        rasa_env={"PYTHONPATH": os.pathsep.join(pythonpath)},
    )
    await bot.start()
    shown = {k: v for k, v in settings.items() if k != "webhook_host"}
    return Stack(
        bot=bot,
        channel_settings=shown,
        tracker_store=store_name,
        startup_seconds=time.perf_counter() - started,
        thread_port=thread_port,
    )


# --------------------------------------------------------------------------- load


def started_data(cid: str) -> Dict[str, Any]:
    """CONVERSATION_STARTED data as Sparkcentral sends it."""
    return {
        "conversationId": cid,
        "contactProfile": default_contact_profile("Bench Contact"),
        "contactAttributes": default_contact_attributes(MEDIUM),
        "medium": {"id": MEDIUM},
        "channel": default_channel(),
    }


def channel_metadata(
    data: Dict[str, Any], text: str = "", *, with_details: bool = True
) -> Dict[str, Any]:
    """The metadata our channel gives Rasa with a message ``text`` in a conversation
    started with ``data`` (for the REST controls): built by the channel's own code;
    ``with_details`` False: only what the message says (``details_in_every_message:
    false`` after a conversation's first message)."""
    body = encode_envelope(
        build_envelope(EVENT_INBOUND_MESSAGE_RECEIVED, {**data, "message": {"text": text}})
    )
    event = parse_event(body)
    return message_metadata(ChannelDetails.from_event(event), event, with_details=with_details)


class Load:
    """Drives both channels through one HTTP client session with the same settings."""

    def __init__(self, stack: Stack, rest_metadata: bool = True) -> None:
        self.stack = stack
        self.emu = stack.emulator
        self.watch = ReplyWatch(self.emu)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=REPLY_TIMEOUT),
        )
        self.sc_url = f"{stack.rasa_url}{SC_PATH}"
        self.port_url = (
            f"http://127.0.0.1:{stack.thread_port}{SC_PATH}" if stack.thread_port else None
        )
        self.rest_url = f"{stack.rasa_url}{REST_PATH}"
        self.probe_url = f"{stack.rasa_url}{PROBE_PATH}"
        self.sc_first: Optional[float] = None
        self.sc_last: Optional[float] = None
        #: the channels the throughput rounds alternate
        self.channels = [REST] + ([REST_MD] if rest_metadata else []) + [SC]
        if self.port_url:
            self.channels.append(SC_PORT)

    async def close(self) -> None:
        await self.session.close()

    async def probe(self, *flags: str) -> Dict[str, Any]:
        """The bench probe's report (flags: "deep", "stalls")."""
        query = "&".join(f"{flag}=1" for flag in flags)
        async with self.session.get(f"{self.probe_url}?{query}") as response:
            if response.status != 200:
                raise BenchError(f"the bench probe answered {response.status}")
            report: Dict[str, Any] = await response.json()
            return report

    async def pending(self) -> int:
        report = await self.probe()
        return int((report.get("sparkcentral") or {}).get("pending_conversations", 0))

    async def wait_idle(self, timeout: float = 120.0) -> None:
        """Until the channel has no conversation with work queued."""
        deadline = time.perf_counter() + timeout
        while await self.pending():
            if time.perf_counter() > deadline:
                raise BenchError("the Sparkcentral channel never finished its queued turns")
            await asyncio.sleep(0.02)

    # REST ----------------------------------------------------------------------------

    async def rest_says(
        self,
        sender: str,
        text: str,
        expected: Optional[str],
        metadata: Optional[Dict[str, Any]] = None,
    ) -> float:
        """One REST message; its response time. ``expected`` None: no reply wanted."""
        body: Dict[str, Any] = {"sender": sender, "message": text}
        if metadata is not None:
            body["metadata"] = metadata
        started = time.perf_counter()
        async with self.session.post(self.rest_url, json=body) as response:
            raw = await response.read()
            status = response.status
        elapsed = time.perf_counter() - started
        if status != 200:
            raise BenchError(f"REST channel answered {status}: {raw[:200]!r}")
        replies = [m.get("text") for m in json.loads(raw)]
        if replies != ([expected] if expected is not None else []):
            raise BenchError(f"REST conversation {sender}: {text!r} got {replies!r}")
        return elapsed

    # Sparkcentral ----------------------------------------------------------------------

    async def sc_post(
        self, event_type: str, data: Dict[str, Any], url: Optional[str] = None
    ) -> float:
        """POST one signed event to the webhook; the acknowledgement time."""
        body = encode_envelope(build_envelope(event_type, data))
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: self.emu.sign(body)}
        started = time.perf_counter()
        target = url or self.sc_url
        async with self.session.post(target, data=body, headers=headers) as response:
            answer = await response.read()
            status = response.status
        elapsed = time.perf_counter() - started
        if status != 200 or answer.strip() != b"{}":
            raise BenchError(f"Sparkcentral webhook answered {status}: {answer[:200]!r}")
        return elapsed

    async def sc_says(
        self, cid: str, text: str, expected: str, url: Optional[str] = None
    ) -> Tuple[float, float]:
        """(webhook acknowledgement time, time until the emulator got the reply)."""
        reply = self.watch.expect(cid)
        started = time.perf_counter()
        if self.sc_first is None:
            self.sc_first = started
        ack = await self.sc_post(
            EVENT_INBOUND_MESSAGE_RECEIVED,
            {"conversationId": cid, "message": {"text": text}},
            url,
        )
        try:
            at, reply_text = await asyncio.wait_for(reply, REPLY_TIMEOUT)
        except asyncio.TimeoutError:
            raise BenchError(
                f"Sparkcentral conversation {cid}: no reply to {text!r} within "
                f"{REPLY_TIMEOUT:.0f} s"
            ) from None
        if reply_text != expected:
            raise BenchError(f"Sparkcentral conversation {cid}: {text!r} got {reply_text!r}")
        self.sc_last = at
        return ack, at - started

    async def sc_start(self, cid: str, first_turn: bool = False) -> None:
        """Assign a conversation to the bot, in the emulator too (so replies are taken).
        ``first_turn``: then, unless the start intent made the bot greet, say "hi" and
        wait for the greeting (Rasa opens the session in that turn, as in REST's)."""
        reply = self.watch.expect(cid) if self.stack.greets else None
        result = await self.emu.start_conversation(
            cid,
            contact_profile=default_contact_profile("Bench Contact"),
            medium=MEDIUM,
        )
        if result.status != 200:
            raise BenchError(f"CONVERSATION_STARTED answered {result.status}: {result.text}")
        if reply is not None:
            try:
                await asyncio.wait_for(reply, REPLY_TIMEOUT)
            except asyncio.TimeoutError:
                raise BenchError(f"Sparkcentral conversation {cid}: no greeting") from None
        elif first_turn:
            await self.sc_says(cid, "hi", GREETING)

    # rounds ----------------------------------------------------------------------------

    def _rest_metadata(
        self, contacts: Dict[str, Dict[str, Any]], cid: str, text: str, first: bool = False
    ) -> Optional[Dict[str, Any]]:
        """What a REST_MD message carries (None: a plain REST message), as the channel
        gives it under the run's settings: the details with every message, or with the
        conversation's ``first`` only (``details_in_every_message: false``)."""
        contact = contacts.get(cid)
        every = str(
            self.stack.channel_settings.get(
                "details_in_every_message", Settings.details_in_every_message
            )
        )
        with_details = first or every.lower() not in ("false", "0", "no", "off")
        return channel_metadata(contact, text, with_details=with_details) if contact else None

    async def round(self, channel: str, level: Level, index: int) -> RoundResult:
        """Fresh conversations (started untimed), then questions until the round's time is
        up; the rate counts answers while all of them are talking."""
        c = level.concurrency
        # REST_MD: each conversation's contact, the same on every message
        contacts: Dict[str, Dict[str, Any]] = {}
        if channel in (REST, REST_MD):
            ids = [f"bench-{os.getpid()}-r{index}-{c}-{i}" for i in range(c)]
            if channel == REST_MD:
                contacts = {cid: started_data(cid) for cid in ids}
            greetings = [
                self.rest_says(
                    cid, "hi", GREETING, self._rest_metadata(contacts, cid, "hi", first=True)
                )
                for cid in ids
            ]
            await asyncio.gather(*greetings)
        else:
            # the same untimed first turn as REST's "hi" (Rasa opens the session there);
            # a start intent makes CONVERSATION_STARTED that turn
            ids = [new_conversation_id() for _ in range(c)]
            await asyncio.gather(*(self.sc_start(cid, first_turn=True) for cid in ids))
            await self.wait_idle()
        # Every round starts from a fresh heap: a full collection in Rasa (about 0.2 s on
        # its heap, one every few hundred messages) would otherwise land in whichever round
        # crosses the threshold. Those that happen within a round still count, per channel.
        await self.probe("collect")
        gc_before = (await self.probe("stalls"))["gc"]  # and reset the loop-stall samples

        pid = self.stack.rasa_pid
        result = RoundResult(channel, c)
        cpu_before = processes.cpu_seconds(pid)
        started = time.perf_counter()
        steady = started + (c - 1) * STAGGER  # every conversation is talking from here
        deadline = started + level.seconds  # no new question after this

        async def converse(offset: int, cid: str) -> None:
            await asyncio.sleep(offset * STAGGER)  # contacts don't all write at once
            turn = 0
            while time.perf_counter() < deadline:
                text, expected = MESSAGES[(offset + turn) % len(MESSAGES)]
                turn += 1
                sent = time.perf_counter()
                if channel in (REST, REST_MD):
                    metadata = self._rest_metadata(contacts, cid, text)
                    ack, e2e = math.nan, await self.rest_says(cid, text, expected, metadata)
                else:
                    url = self.port_url if channel == SC_PORT else None
                    ack, e2e = await self.sc_says(cid, text, expected, url)
                done = time.perf_counter()
                result.messages += 1
                if sent >= steady:  # latencies under the full load only
                    result.e2e.append(e2e)
                    if not math.isnan(ack):
                        result.ack.append(ack)
                if steady <= done <= deadline:
                    result.window_messages += 1

        await asyncio.gather(*(converse(i, cid) for i, cid in enumerate(ids)))
        result.seconds = time.perf_counter() - started
        result.rasa_cpu = processes.cpu_seconds(pid) - cpu_before
        result.window_seconds = max(0.0, deadline - steady)
        after = await self.probe("stalls")
        result.stalls = after.get("loop_stalls") or {}
        result.full_gcs = int(after["gc"]["counts"][2] - gc_before["counts"][2])
        result.full_gc_seconds = after["gc"]["seconds"][2] - gc_before["seconds"][2]
        if channel not in (REST, REST_MD):
            for cid in ids:
                self.watch.forget(cid)
                self.emu.conversations.pop(cid, None)
        return result


async def run_many(count: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    """``job(0..count-1)`` with at most ``concurrency`` running at once."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await job(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))


# --------------------------------------------------------------------------- phases


@dataclass
class LevelResult:
    level: Level
    rounds: List[RoundResult]
    loop_lag: List[float]

    def of(self, channel: str) -> List[RoundResult]:
        return [r for r in self.rounds if r.channel == channel]

    def rate(self, channel: str) -> float:
        rounds = self.of(channel)
        if all(r.window_seconds > 0 for r in rounds):
            return sum(r.window_messages for r in rounds) / sum(r.window_seconds for r in rounds)
        return sum(r.messages for r in rounds) / sum(r.seconds for r in rounds)

    def cpu_per_message(self, channel: str) -> float:
        rounds = self.of(channel)
        return sum(r.rasa_cpu for r in rounds) / sum(r.messages for r in rounds)

    def values(self, channel: str, what: str) -> List[float]:
        return [v for r in self.of(channel) for v in getattr(r, what)]

    def worst_stall(self, channel: str, key: str) -> float:
        return max((r.stalls.get(key, math.nan) for r in self.of(channel)), default=math.nan)


Say = Callable[[str], None]


ALL_CHANNELS = (REST, REST_MD, SC, SC_PORT)
CHANNEL_NAMES = {
    REST: "REST",
    REST_MD: "REST with the channel's metadata",
    SC: "Sparkcentral on Rasa's port",
    SC_PORT: "Sparkcentral on `webhook_port`",
}


async def throughput_phase(load: Load, plan: Plan, lag: LoopLag, say: Say) -> List[LevelResult]:
    results = []
    index = 0
    for level in plan.levels:
        lag.take()
        rounds: List[RoundResult] = []
        channels = tuple(c for c in ALL_CHANNELS if c in load.channels)
        for _ in range(plan.pairs):
            for channel in channels:
                index += 1
                r = await load.round(channel, level, index)
                rounds.append(r)
                extra = ""
                if r.ack:
                    extra = f", ack p99 {percentile(r.ack, 99) * 1000:5.1f} ms"
                say(
                    f"  {level.concurrency:>3} conversations  {channel:<15} {r.messages:>4} "
                    f"messages in {r.seconds:5.2f} s; steady {r.window_messages:>4} in "
                    f"{r.window_seconds:5.2f} s = {r.rate:5.1f} msg/s, rasa CPU "
                    f"{100 * r.rasa_cpu / r.seconds:3.0f}%{extra}"
                )
        results.append(LevelResult(level, rounds, lag.take()))
    return results


@dataclass
class MemoryPoint:
    conversations: int
    rss_kb: int
    probe: Dict[str, Any]

    @property
    def channel(self) -> Dict[str, Any]:
        return self.probe.get("sparkcentral") or {}


@dataclass
class MemorySeries:
    points: List[MemoryPoint]
    seconds: float

    @property
    def conversations(self) -> int:
        return self.points[-1].conversations

    @property
    def growth_kb(self) -> int:
        return self.points[-1].rss_kb - self.points[0].rss_kb


@dataclass
class MemoryResult:
    rest: MemorySeries
    sc: MemorySeries


async def memory_phase(load: Load, plan: Plan, say: Say) -> MemoryResult:
    """Distinct conversations, each one Rasa turn ("hi" with the channel's metadata,
    answered by the greeting): first over REST (the control), then over our channel
    (CONVERSATION_STARTED, then the contact's "hi")."""

    async def measure(done: int) -> MemoryPoint:
        await load.wait_idle()
        await asyncio.sleep(0.5)
        report = await load.probe("deep")
        point = MemoryPoint(done, int(report["process"]["VmRSS"]), report)
        return point

    async def series(
        label: str, count: int, send: Callable[[int, int], Awaitable[None]]
    ) -> MemorySeries:
        points = [await measure(0)]
        quarter = max(1, math.ceil(count / 4))
        done = 0
        busy = 0.0
        while done < count:
            batch = min(quarter, count - done)
            started = time.perf_counter()
            await send(done, batch)
            await load.wait_idle()
            busy += time.perf_counter() - started
            done += batch
            point = await measure(done)
            points.append(point)
            say(f"  {label:<12} {done:>6} conversations: rasa VmRSS {point.rss_kb / 1024:6.1f} MB")
        return MemorySeries(points, busy)

    tag = os.getpid()

    async def rest_batch(first: int, count: int) -> None:
        async def one(i: int) -> None:
            sender = f"bench-{tag}-m{first + i}"
            data = started_data(sender)
            await load.rest_says(sender, "hi", GREETING, channel_metadata(data, "hi"))

        await run_many(count, MEMORY_WINDOW, one)

    async def sc_batch(first: int, count: int) -> None:
        """CONVERSATION_STARTED, then "hi" until the greeting came (about MEMORY_WINDOW
        conversations at once)."""

        async def one(i: int) -> None:
            cid = new_conversation_id()
            await load.sc_start(cid, first_turn=True)
            load.watch.forget(cid)
            load.emu.conversations.pop(cid, None)

        await run_many(count, MEMORY_WINDOW, one)

    rest = await series(REST, plan.control_conversations, rest_batch)
    sc = await series(SC, plan.memory_conversations, sc_batch)
    return MemoryResult(rest, sc)


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass
class Row:
    figure: str
    measured: str
    target: str
    result: str


@dataclass
class Report:
    rows: List[Row]
    notes: List[str]
    misses: List[str]


def build_report(
    stack: Stack,
    levels: List[LevelResult],
    memory: Optional[MemoryResult],
    load: Load,
    peak_connections: int,
    wall: float,
    args: argparse.Namespace,
) -> Report:
    rows: List[Row] = []
    misses: List[str] = []

    def add(figure: str, measured: str, target: str, ok: Optional[bool]) -> None:
        result = "info" if ok is None else ("PASS" if ok else "**MISS**")
        rows.append(Row(figure, measured, target, result))
        if ok is False:
            misses.append(figure)

    variants = [(SC, "")] + ([(SC_PORT, ", `webhook_port`")] if load.port_url else [])
    for channel, label in variants:
        for lr in levels:
            c = lr.level.concurrency
            rest_rate, sc_rate = lr.rate(REST), lr.rate(channel)
            ratio = sc_rate / rest_rate
            add(
                f"Throughput, {plural(c, 'conversation')}{label}",
                f"REST {rest_rate:.1f} msg/s, Sparkcentral{label} {sc_rate:.1f} msg/s: "
                f"ratio **{ratio:.3f}**",
                f"ratio ≥ {THROUGHPUT_RATIO_TARGET}",
                ratio >= THROUGHPUT_RATIO_TARGET,
            )
    if REST_MD in load.channels:
        for lr in levels:
            c = lr.level.concurrency
            md_rate = lr.rate(REST_MD)
            add(
                f"Throughput, {plural(c, 'conversation')}, against REST with the same metadata",
                f"REST with the channel's metadata {md_rate:.1f} msg/s (plain REST "
                f"{lr.rate(REST):.1f}): Sparkcentral "
                + ", `webhook_port` ".join(
                    f"{lr.rate(channel) / md_rate:.3f}" for channel, _ in variants
                ),
                "-",
                None,
            )
    for channel, label in variants:
        for lr in levels:
            c = lr.level.concurrency
            acks = lr.values(channel, "ack")
            p99 = percentile(acks, 99)
            here = c == ACK_TARGET_LEVEL
            add(
                f"Webhook acknowledgement, {plural(c, 'conversation')}{label}",
                f"p50 {ms(percentile(acks, 50))}, p99 **{ms(p99)}** ({len(acks):,} webhooks); "
                f"a 5 ms timer on Rasa's event loop fired p99 "
                f"{lr.worst_stall(channel, 'p99_ms'):.0f} ms, at worst "
                f"{lr.worst_stall(channel, 'max_ms'):.0f} ms late",
                f"p99 ≤ {ACK_P99_TARGET_MS:.0f} ms" if here else "-",
                (p99 * 1000 <= ACK_P99_TARGET_MS) if here else None,
            )
    for lr in levels:
        c = lr.level.concurrency
        sc_e2e, rest_e2e = lr.values(SC, "e2e"), lr.values(REST, "e2e")
        port = ""
        if load.port_url:
            port_e2e = lr.values(SC_PORT, "e2e")
            port = (
                f"; `webhook_port` p50 {ms(percentile(port_e2e, 50))}, "
                f"p99 {ms(percentile(port_e2e, 99))}"
            )
        add(
            f"End-to-end latency, {plural(c, 'conversation')}",
            f"Sparkcentral p50 {ms(percentile(sc_e2e, 50))}, p99 {ms(percentile(sc_e2e, 99))}"
            f"{port} (REST p50 {ms(percentile(rest_e2e, 50))}, "
            f"p99 {ms(percentile(rest_e2e, 99))})",
            "-",
            None,
        )

    # tokens: one per token lifetime per process (the client renews up to 10% early)
    emu = stack.emulator
    tokens = emu.token_requests
    span = (load.sc_last or 0.0) - (load.sc_first or 0.0)
    allowed = 1 + math.floor(span / (0.9 * args.token_lifetime))
    replies = load.watch.total
    per_thousand = tokens * 1000 / replies if replies else math.nan
    add(
        "OAuth2 token requests",
        f"**{tokens}** for {replies:,} replies over {span:.0f} s ({per_thousand:.2f} per "
        f"1,000 messages), tokens living {args.token_lifetime:.0f} s",
        f"≤ {allowed}: 1 per token lifetime",
        tokens <= allowed,
    )
    pool = int(stack.channel_settings.get("max_connections", 20))
    add(
        "TCP connections opened to Sparkcentral",
        f"**{emu.connections_opened}** over the run, at most {peak_connections} open at once",
        f"≤ {pool} (max_connections)",
        emu.connections_opened <= pool,
    )

    if memory is not None:
        rest, sc = memory.rest, memory.sc
        end = sc.points[-1].channel
        entries: Dict[str, int] = end.get("cache_entries") or {}
        cache_size = int(end.get("cache_size_setting") or args.cache_size)
        cap_kb = (end.get("state_bytes") or 0) / 1024
        allowed_kb = max(rest.growth_kb, 0) + cap_kb + MEMORY_NOISE_MB * 1024
        add(
            f"Rasa resident memory, {sc.conversations:,} Sparkcentral conversations",
            f"{mb(sc.points[0].rss_kb)} → {mb(sc.points[-1].rss_kb)}: "
            f"**{sc.growth_kb / 1024:+.1f} MB** (REST control, {rest.conversations:,} "
            f"conversations: {rest.growth_kb / 1024:+.1f} MB)",
            f"≤ control + the full caches ({cap_kb / 1024:.1f} MB) + {MEMORY_NOISE_MB:.0f} MB",
            sc.growth_kb <= allowed_kb,
        )
        state_mb = " → ".join(
            f"{(p.channel.get('state_bytes') or 0) / 1048576:.1f}" for p in sc.points
        )
        per_conversation = _bytes_per_conversation(sc)
        unbounded = ""
        if per_conversation:
            unbounded = (
                f"; unbounded they would hold "
                f"{per_conversation * sc.conversations / 1048576:.0f} MB"
            )
        add(
            "The channel's caches after those conversations",
            ", ".join(f"{k} {v:,}" for k, v in entries.items())
            + f" entries; {state_mb} MB at each quarter{unbounded}",
            f"each ≤ cache_size ({cache_size:,})",
            bool(entries) and all(v <= cache_size for v in entries.values()),
        )
        add(
            "Conversation starts (memory phase, the same first turn each)",
            f"REST {rest.conversations / rest.seconds:.1f}/s, Sparkcentral "
            f"{sc.conversations / sc.seconds:.1f}/s",
            "-",
            None,
        )

    def cpu(channel: str) -> str:
        return "/".join(f"{lr.cpu_per_message(channel) * 1000:.1f}" for lr in levels) + " ms"

    add(
        "Rasa CPU per message at " + "/".join(str(lr.level.concurrency) for lr in levels),
        f"REST {cpu(REST)}, "
        + (f"REST with the channel's metadata {cpu(REST_MD)}, " if REST_MD in load.channels else "")
        + f"Sparkcentral {cpu(SC)}"
        + (f", `webhook_port` {cpu(SC_PORT)}" if load.port_url else ""),
        "-",
        None,
    )

    def full_gcs(channel: str) -> str:
        rounds = [r for lr in levels for r in lr.of(channel)]
        count = sum(r.full_gcs for r in rounds)
        seconds = sum(r.full_gc_seconds for r in rounds)
        return f"{count} ({seconds * 1000:.0f} ms)"

    add(
        "Rasa's full garbage collections during the rounds (each round starts after one)",
        ", ".join(f"{channel} {full_gcs(channel)}" for channel in load.channels),
        "-",
        None,
    )
    lags = [v for lr in levels for v in lr.loop_lag]
    add(
        "The load generator's own event-loop lag",
        f"p50 {ms(percentile(lags, 50))}, p99 {ms(percentile(lags, 99))}",
        "-",
        None,
    )

    channel_client = ((memory.sc.points[-1].channel if memory else {}) or {}).get("client") or {}
    notes = [
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}, rasa {_version('rasa')}, aiohttp {_version('aiohttp')}; "
        f"wall time **{wall:.0f} s** (servers up in {stack.startup_seconds:.0f} s)",
        f"One `rasa run` with both channels and the example bot; tracker store: "
        f"{stack.tracker_store}; Sparkcentral channel settings: "
        f"{_settings_text(stack.channel_settings)}",
        "Rounds: "
        + ", ".join(f"{lr.level.concurrency} conversations {lr.level.seconds:g} s" for lr in levels)
        + f"; {args.plan.pairs} rounds per channel and level, alternating "
        + ", ".join(CHANNEL_NAMES[channel] for channel in load.channels)
        + "; fresh conversations each round",
    ]
    if args.channel_class != CREDENTIALS_KEY:
        notes.append(f"Channel class: `{args.channel_class}` (a variant, not the default)")
    if channel_client:
        notes.append(
            f"The channel's REST client: {channel_client.get('requests')} requests, "
            f"{channel_client.get('token_requests')} token requests, "
            f"{channel_client.get('retries')} retries, {channel_client.get('failures')} failures"
        )
    return Report(rows, notes, misses)


def _bytes_per_conversation(series: MemorySeries) -> float:
    """State bytes per conversation while the caches were filling (first quarter)."""
    first, second = series.points[0], series.points[1]
    grew = (second.channel.get("state_bytes") or 0) - (first.channel.get("state_bytes") or 0)
    entries = (second.channel.get("cache_entries") or {}).get("details", 0) - (
        first.channel.get("cache_entries") or {}
    ).get("details", 0)
    return grew / entries if entries > 0 else 0.0


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "?"


def _settings_text(settings: Dict[str, Any]) -> str:
    return ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in settings.items())


def render(report: Report, command: str) -> str:
    lines = ["| Figure | Measured | Target | Result |", "|---|---|---|---|"]
    lines.extend(
        f"| {row.figure} | {row.measured} | {row.target} | {row.result} |" for row in report.rows
    )
    lines += ["", f"`{command}`", ""]
    lines.extend(f"- {note}" for note in report.notes)
    if report.misses:
        lines.append(f"- Missed: {'; '.join(report.misses)}")
    else:
        lines.append("- Every target met.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sparkcentral channel vs Rasa's REST channel, one rasa run, one table."
    )
    parser.add_argument("--quick", action="store_true", help="a short run (~1.5 min)")
    parser.add_argument(
        "--conversations",
        type=int,
        help="Sparkcentral conversations in the memory phase (10,000; --quick 1,000; 0 skips)",
    )
    parser.add_argument(
        "--control", type=int, help="REST conversations for the memory control (1,000)"
    )
    parser.add_argument("--pairs", type=int, help="rounds per channel and level (3; --quick 2)")
    parser.add_argument(
        "--levels",
        help="concurrency levels and seconds per round, e.g. 1:1,10:3,100:8",
    )
    parser.add_argument(
        "--cache-size", type=int, default=1000, help="the channel's cache_size (1000)"
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=60.0,
        help="seconds the emulator's tokens live (60, so renewals happen during the run)",
    )
    parser.add_argument(
        "--tracker-store",
        choices=("bounded", "memory", "sql", "redis"),
        default="bounded",
        help="Rasa's tracker store (bounded: in memory, at most 500 conversations kept)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Sparkcentral channel setting for this run, e.g. --set max_concurrent_turns=2",
    )
    parser.add_argument(
        "--no-webhook-port",
        dest="webhook_port_variant",
        action="store_false",
        help="skip the rounds sent to the channel's own listener (webhook_port)",
    )
    parser.add_argument(
        "--no-rest-metadata",
        dest="rest_metadata",
        action="store_false",
        help="skip the REST rounds that carry the channel's metadata (the control that "
        "shows what the metadata costs Rasa)",
    )
    parser.add_argument(
        "--channel-class",
        default=CREDENTIALS_KEY,
        help="the input channel class to benchmark, e.g. a subclass on PYTHONPATH "
        f"(default {CREDENTIALS_KEY})",
    )
    parser.add_argument("--out", default=str(RESULTS), help="where to write the table")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs")
    args = parser.parse_args(argv)
    args.channel_settings = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--set wants KEY=VALUE, not {item!r}")
        args.channel_settings[key.strip()] = yaml.safe_load(value)
    plan = QUICK if args.quick else FULL
    levels = plan.levels
    if args.levels:
        try:
            levels = tuple(
                Level(int(c), float(seconds))
                for c, seconds in (part.split(":") for part in args.levels.split(","))
            )
        except ValueError:
            parser.error(f"--levels wants CONCURRENCY:SECONDS,..., not {args.levels!r}")
    args.plan = Plan(
        levels=levels,
        pairs=args.pairs or plan.pairs,
        memory_conversations=(
            plan.memory_conversations if args.conversations is None else args.conversations
        ),
        control_conversations=plan.control_conversations if args.control is None else args.control,
    )
    return args


async def main_async(args: argparse.Namespace, command: str) -> int:
    wall_started = time.perf_counter()
    log_dir = Path(tempfile.mkdtemp(prefix="rasa-sparkcentral-bench-"))

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"server logs: {log_dir}")
    say("starting the emulator, the action server and rasa run (the model loads once)...")
    stack = await start_stack(args, log_dir)
    say(f"servers up in {stack.startup_seconds:.0f} s; rasa pid {stack.rasa_pid}")
    load = Load(stack, rest_metadata=args.rest_metadata)
    lag = LoopLag()
    peak = ConnectionPeak(stack.emulator)
    lag.start()
    peak.start()
    completed = False
    try:
        # warm-up (untimed): first calls, first token, first NLU runs, the probe
        warm = new_conversation_id()
        await load.sc_start(warm)
        for text, expected in MESSAGES * 2:
            await load.rest_says(f"bench-{os.getpid()}-warm-up", text, expected)
            await load.sc_says(warm, text, expected)
        say("throughput and latency (alternating rounds):")
        levels = await throughput_phase(load, args.plan, lag, say)
        memory = None
        if args.plan.memory_conversations > 0:
            say("memory (distinct conversations):")
            memory = await memory_phase(load, args.plan, say)
        await peak.stop()
        report = build_report(
            stack, levels, memory, load, peak.peak, time.perf_counter() - wall_started, args
        )
        text = render(report, command)
        print()
        print(text, end="")
        if not args.no_write:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                "# Benchmark results (latest run)\n\nWritten by `benchmarks/run.py`; "
                "`benchmarks/README.md` says how to read it.\n\n" + text,
                encoding="utf-8",
            )
            say(f"\nwritten to {out}")
        completed = True
        return 0
    finally:
        await lag.stop()
        await peak.stop()
        await load.close()
        await stack.stop()
        if completed and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            say(f"server logs kept in {log_dir}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/run.py", *shown])
    try:
        import uvloop  # installed with Sanic, hence with Rasa

        uvloop.install()
    except ImportError:
        pass
    try:
        return asyncio.run(main_async(args, command))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BenchError, processes.ServerStartError) as e:
        print(f"benchmark run failed: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("benchmark run failed", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
