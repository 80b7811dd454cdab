"""Soak test: many deliveries, duplicates and Sparkcentral failures; nothing lost, nothing
twice, nothing out of order.

    .venv/bin/python benchmarks/soak.py --deliveries 10000
    .venv/bin/python benchmarks/soak.py --deliveries 1000 --conversations 40   # quick

Starts the Sparkcentral emulator in this process (failing ``--fail-rate`` of the REST calls
with 503, seeded), the example bot's action server and one ``rasa run`` with the
Sparkcentral channel (default settings). Then sends ``--deliveries`` webhook deliveries
over ``--conversations`` conversations, ``--concurrency`` conversations at a time. Each
conversation starts (CONVERSATION_STARTED, answered with the greeting), then the contact
asks "what are your opening hours?" and "how long does shipping take?" in turn, each with
exactly one deterministic answer; the next question goes once the answer to the one
``--window`` questions back has arrived (0: never wait). ``--duplicate-rate`` of the
deliveries are repeats of an earlier one (same idempotency key): sent right after it, at
the same time as it, or later in the conversation, as a retrying Sparkcentral would.

Then it waits for every reply and compares, per conversation, the texts Sparkcentral
received with the expected ones, and the contact's messages in Rasa's tracker with the
ones sent. Prints the counts; exits 0 only when lost = duplicated = out-of-order = 0.

- lost: expected replies that never arrived (or messages Rasa never saw);
- duplicated: replies (or user events in Rasa) beyond the expected ones;
- out-of-order: replies (or user events) in the wrong place.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

# `python benchmarks/soak.py` with an interpreter that lacks Rasa: use the project's venv
# (the servers are started with this very interpreter).
_WRONG_PYTHON = importlib.util.find_spec("rasa") is None and VENV_PYTHON.exists()
if _WRONG_PYTHON and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
if str(REPO_ROOT) not in sys.path:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from rasa_sparkcentral.testing import processes  # noqa: E402
from rasa_sparkcentral.testing.emulator import (  # noqa: E402
    EmulatorEvent,
    SparkcentralEmulator,
    WebhookResult,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
)
from rasa_sparkcentral.testing.stack import BotStack, bot_stack  # noqa: E402

BOT_DIR = REPO_ROOT / "example_bot"
MODEL = BOT_DIR / "models" / "example_bot.tar.gz"
STARTED = "CONVERSATION_STARTED"
INBOUND = "INBOUND_MESSAGE_RECEIVED"


def _responses() -> Dict[str, str]:
    domain = yaml.safe_load((BOT_DIR / "domain.yml").read_text(encoding="utf-8"))
    return {name: str(v[0].get("text", "")) for name, v in domain["responses"].items()}


TEXTS = _responses()
GREETING = TEXTS["utter_greet"]
QUESTIONS = [
    ("what are your opening hours?", TEXTS["utter_opening_hours"]),
    ("how long does shipping take?", TEXTS["utter_shipping"]),
]


# ----------------------------------------------------------------------------- the plan


@dataclass
class Delivery:
    """One unique event of a conversation and the reply it must get."""

    event_type: str
    data: Dict[str, Any]
    reply: str
    key: str = ""
    copies: int = 1
    concurrent: bool = False
    late_repeats: int = 0  # repeats sent later in the conversation


@dataclass
class Conversation:
    cid: str
    deliveries: List[Delivery]
    # (after the delivery at this index, repeat the delivery at that index)
    late: List[Tuple[int, int]] = field(default_factory=list)
    sent: int = 0  # webhook POSTs made

    @property
    def expected(self) -> List[str]:
        return [d.reply for d in self.deliveries]


def plan(
    deliveries: int, conversations: int, duplicate_rate: float, rng: random.Random
) -> List[Conversation]:
    """Split ``deliveries`` POSTs into unique events and repeats, over the conversations."""
    unique = max(conversations * 2, round(deliveries / (1.0 + duplicate_rate)))
    repeats = max(0, deliveries - unique)
    plans: List[Conversation] = []
    for n in range(conversations):
        cid = f"soak-{n:05d}-{rng.getrandbits(32):08x}"
        data = {
            "conversationId": cid,
            "contactProfile": default_contact_profile(f"Contact {n}"),
            "contactAttributes": default_contact_attributes("smooch-rtm", "en-GB"),
            "medium": {"id": "smooch-rtm"},
            "channel": default_channel(),
        }
        plans.append(Conversation(cid, [Delivery(STARTED, data, GREETING)]))
    for i in range(unique - conversations):
        conv = plans[i % conversations]
        text, reply = QUESTIONS[(len(conv.deliveries) - 1) % 2]
        data = {"conversationId": conv.cid, "message": {"text": text}}
        conv.deliveries.append(Delivery(INBOUND, data, reply))
    everything = [(c, i) for c in plans for i in range(len(c.deliveries))]
    for _ in range(repeats):
        conv, index = rng.choice(everything)
        delivery = conv.deliveries[index]
        kind = rng.choice(("sequential", "concurrent", "late"))
        if kind == "late":
            after = rng.randint(index, len(conv.deliveries) - 1)
            conv.late.append((after, index))
            delivery.late_repeats += 1
        else:
            delivery.copies += 1
            delivery.concurrent = delivery.concurrent or kind == "concurrent"
    return plans


# ----------------------------------------------------------------------------- the run


class ReplyWatch:
    """Wakes a conversation's sender when enough replies arrived there (one waiter per
    conversation; only that conversation's events are looked at)."""

    def __init__(self, emu: SparkcentralEmulator) -> None:
        self.emu = emu
        self.waiters: Dict[str, Tuple[int, asyncio.Future[None]]] = {}
        emu.add_listener(self._on_event)

    def _on_event(self, event: EmulatorEvent) -> None:
        waiter = self.waiters.get(event.conversation_id or "")
        if waiter is None:
            return
        need, future = waiter
        if not future.done() and len(self.emu.bot_texts(event.conversation_id or "")) >= need:
            future.set_result(None)

    async def wait(self, cid: str, need: int, timeout: float) -> None:
        if len(self.emu.bot_texts(cid)) >= need:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[cid] = (need, future)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self.waiters.pop(cid, None)


class Sender:
    def __init__(self, stack: BotStack, window: int) -> None:
        self.emu = stack.emulator
        self.url = stack.webhook_url
        self.window = window
        self.watch = ReplyWatch(stack.emulator)
        self.acks: List[float] = []
        self.failed: List[str] = []

    def _check(self, result: WebhookResult, what: str) -> None:
        for r in result.results or [result]:
            self.acks.append(r.elapsed)
            if r.status != 200 or r.json != {}:
                self.failed.append(f"{what}: {r.status} {r.text[:200]}")

    async def send(self, conv: Conversation, delivery: Delivery) -> None:
        result = await self.emu.deliver(
            delivery.event_type,
            delivery.data,
            copies=delivery.copies,
            concurrent=delivery.concurrent,
            url=self.url,
        )
        delivery.key = result.idempotency_key or ""
        conv.sent += delivery.copies
        self._check(result, f"{conv.cid} {delivery.event_type}")

    async def repeat(self, conv: Conversation, delivery: Delivery) -> None:
        result = await self.emu.deliver(
            delivery.event_type, delivery.data, idempotency_key=delivery.key, url=self.url
        )
        conv.sent += 1
        self._check(result, f"{conv.cid} repeat of {delivery.key}")

    async def converse(self, conv: Conversation) -> None:
        late = sorted(conv.late)
        for index, delivery in enumerate(conv.deliveries):
            if self.window and index > self.window:
                # the reply to the message `window` places back must be in
                await self.watch.wait(conv.cid, index - self.window, timeout=600)
            await self.send(conv, delivery)
            while late and late[0][0] == index:
                await self.repeat(conv, conv.deliveries[late.pop(0)[1]])


async def run_all(sender: Sender, plans: Sequence[Conversation], concurrency: int) -> None:
    queue: asyncio.Queue[Conversation] = asyncio.Queue()
    for conv in plans:
        queue.put_nowait(conv)

    async def worker() -> None:
        while not queue.empty():
            await sender.converse(queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(plans)))))


async def wait_for_replies(emu: SparkcentralEmulator, plans: Sequence[Conversation]) -> None:
    """Until every expected reply arrived, or nothing new came for a minute; then a quiet
    spell for late duplicates."""
    expected = sum(len(c.deliveries) for c in plans)

    def received() -> int:
        return sum(len(emu.bot_texts(c.cid)) for c in plans)

    last, since = -1, time.monotonic()
    while received() < expected and time.monotonic() - since < 60:
        await asyncio.sleep(0.5)
        if received() != last:
            last, since = received(), time.monotonic()
    last = -1
    while received() != last:  # nothing new for 2 s
        last = received()
        await asyncio.sleep(2.0)


# ----------------------------------------------------------------------------- checking


@dataclass
class Tally:
    deliveries: int = 0
    unique: int = 0
    expected: int = 0
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    problems: List[str] = field(default_factory=list)


def compare_replies(expected: List[str], received: List[str]) -> Tuple[int, int, int]:
    """(lost, duplicated, out of order) between the expected and the received texts."""
    lost = duplicated = disordered = 0
    matcher = difflib.SequenceMatcher(None, expected, received, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "delete":
            lost += i2 - i1
        elif tag == "insert":
            duplicated += j2 - j1
        elif tag == "replace":
            common = min(i2 - i1, j2 - j1)
            disordered += common
            lost += (i2 - i1) - common
            duplicated += (j2 - j1) - common
    return lost, duplicated, disordered


def longest_increasing(values: List[int]) -> int:
    import bisect

    tails: List[int] = []
    for value in values:
        at = bisect.bisect_left(tails, value)
        if at == len(tails):
            tails.append(value)
        else:
            tails[at] = value
    return len(tails)


def compare_keys(sent: List[str], seen: List[str]) -> Tuple[int, int, int]:
    """(lost, duplicated, out of order) between the keys sent and the tracker's."""
    position = {key: n for n, key in enumerate(sent)}
    known = [position[k] for k in seen if k in position]
    lost = len(set(sent) - set(seen))
    duplicated = len(known) - len(set(known)) + sum(1 for k in seen if k not in position)
    distinct: List[int] = []
    for p in known:
        if p not in distinct:
            distinct.append(p)
    disordered = len(distinct) - longest_increasing(distinct)
    return lost, duplicated, disordered


async def tracker_keys(session: aiohttp.ClientSession, rasa_url: str, cid: str) -> List[str]:
    async with session.get(
        f"{rasa_url}/conversations/{cid}/tracker", params={"include_events": "ALL"}
    ) as response:
        response.raise_for_status()
        tracker = await response.json()
    keys = []
    for event in tracker.get("events", []):
        if event.get("event") != "user":
            continue
        key = str(event.get("message_id") or "")
        if key.endswith(":restart"):
            continue  # CONVERSATION_STARTED: /restart, then /greet (":start")
        keys.append(key[: -len(":start")] if key.endswith(":start") else key)
    return keys


async def check(stack: BotStack, plans: Sequence[Conversation]) -> Tally:
    tally = Tally()
    async with aiohttp.ClientSession() as session:
        for conv in plans:
            expected = conv.expected
            received = stack.emulator.bot_texts(conv.cid)
            tally.deliveries += conv.sent
            tally.unique += len(conv.deliveries)
            tally.expected += len(expected)
            tally.received += len(received)
            replies = compare_replies(expected, received)
            sent_keys = [d.key for d in conv.deliveries]
            events = compare_keys(sent_keys, await tracker_keys(session, stack.rasa_url, conv.cid))
            lost, duplicated, disordered = (max(a, b) for a, b in zip(replies, events))
            tally.lost += lost
            tally.duplicated += duplicated
            tally.out_of_order += disordered
            if lost or duplicated or disordered:
                tally.problems.append(
                    f"{conv.cid}: replies lost/duplicated/out of order {replies}, "
                    f"Rasa's user events {events}"
                )
    return tally


# ----------------------------------------------------------------------------- main


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: Optional[int]) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        return processes.cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def ensure_model(model: Path) -> None:
    if model.exists():
        return
    print(f"training the example bot ({model} is missing) ...", flush=True)
    name = model.name.split(".")[0]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rasa",
            "train",
            "--fixed-model-name",
            name,
            "--out",
            str(model.parent),
        ],
        cwd=BOT_DIR,
        env=processes.base_env(),
        stdin=subprocess.DEVNULL,
        check=True,
    )


@dataclass
class SoakResult:
    """What one soak run saw; ``ok`` when nothing was lost, repeated or reordered."""

    deliveries_planned: int
    tally: Tally
    unacknowledged: List[str]
    """Webhook POSTs the channel did not answer 200 ``{}``."""
    acks: List[float]
    """Seconds each webhook POST took to be acknowledged."""
    seconds: float
    sent_seconds: float
    faults_injected: int
    calls_by_status: Dict[str, int]
    calls_kept: int
    token_requests: int
    cpu: Dict[str, float]
    log_dir: Path

    @property
    def ok(self) -> bool:
        tally = self.tally
        return (
            tally.lost == tally.duplicated == tally.out_of_order == 0
            and not self.unacknowledged
            and tally.deliveries == self.deliveries_planned
        )


async def run_soak(
    *,
    deliveries: int = 10_000,
    conversations: int = 200,
    duplicate_rate: float = 0.10,
    fail_rate: float = 0.05,
    seed: int = 20261125,
    concurrency: int = 50,
    window: int = 3,
    model: Path = MODEL,
    log_dir: Optional[Path] = None,
    keep_logs: bool = False,
    say: Callable[[str], None] = print,
) -> SoakResult:
    """Start the stack, send the deliveries, wait for the replies and count (see the top)."""
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="soak-"))
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plans = plan(deliveries, conversations, duplicate_rate, rng)
    say(
        f"soak: {deliveries} deliveries over {len(plans)} conversations, "
        f"{duplicate_rate:.0%} repeated, {fail_rate:.0%} of REST calls failing "
        f"(seed {seed}); logs in {logs}"
    )
    emulator = SparkcentralEmulator(max_calls=2000, webhook_timeout=60.0)
    emulator.faults.fail_rate = fail_rate
    emulator.faults.seed = seed
    try:
        async with bot_stack(
            bot_dir=BOT_DIR,
            model=model,
            log_dir=logs,
            emulator=emulator,
            # every conversation opens with the greeting, as the example bot's credentials say
            channel_settings={"conversation_started_intent": "greet"},
        ) as stack:
            sender = Sender(stack, window)
            started = time.monotonic()
            await run_all(sender, plans, concurrency)
            sent_in = time.monotonic() - started
            await wait_for_replies(stack.emulator, plans)
            done_in = time.monotonic() - started
            tally = await check(stack, plans)
            stats = stack.emulator.stats()
            assert stack.action is not None
            cpu = {
                "this process (emulator, load)": time.process_time(),
                "rasa run": cpu_seconds(stack.rasa.pid),
                "action server": cpu_seconds(stack.action.pid),
            }
    finally:
        if not log_dir and not keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
    return SoakResult(
        deliveries_planned=deliveries,
        tally=tally,
        unacknowledged=sender.failed,
        acks=sender.acks,
        seconds=done_in,
        sent_seconds=sent_in,
        faults_injected=int(stats["faultsInjected"]),
        calls_by_status=dict(stats["callsByStatus"]),
        calls_kept=len(emulator.calls),
        token_requests=int(stats["tokenRequests"]),
        cpu=cpu,
        log_dir=logs,
    )


def report(result: SoakResult, as_json: bool = False) -> None:
    """Print the counts, the timings and the problems of a run."""
    tally = result.tally
    print()
    print(f"deliveries        {tally.deliveries}")
    print(f"unique messages   {tally.unique}")
    print(f"replies expected  {tally.expected}")
    print(f"replies received  {tally.received}")
    print(f"lost              {tally.lost}")
    print(f"duplicated        {tally.duplicated}")
    print(f"out-of-order      {tally.out_of_order}")
    print()
    acks = result.acks
    print(
        f"wall time {result.seconds:.1f} s (all sent after {result.sent_seconds:.1f} s); "
        f"{tally.unique / result.seconds:.1f} messages/s; webhook acknowledged in "
        f"p50 {percentile(acks, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(acks, 0.99) * 1000:.1f} ms, "
        f"max {max(acks, default=0) * 1000:.1f} ms"
    )
    print(
        f"Sparkcentral: {result.faults_injected} faults injected, "
        f"{result.calls_by_status} calls by status (last {result.calls_kept}), "
        f"{result.token_requests} token request(s)"
    )
    print("CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.cpu.items()))
    if as_json:
        summary = {
            "deliveries": tally.deliveries,
            "unique": tally.unique,
            "expected": tally.expected,
            "received": tally.received,
            "lost": tally.lost,
            "duplicated": tally.duplicated,
            "outOfOrder": tally.out_of_order,
            "seconds": round(result.seconds, 1),
            "faultsInjected": result.faults_injected,
        }
        print(json.dumps(summary))
    for problem in tally.problems[:20]:
        print("  " + problem)
    for failure in result.unacknowledged[:20]:
        print("  webhook not acknowledged: " + failure)
    print("PASS" if result.ok else "FAIL")


async def soak(args: argparse.Namespace) -> int:
    result = await run_soak(
        deliveries=args.deliveries,
        conversations=args.conversations,
        duplicate_rate=args.duplicate_rate,
        fail_rate=args.fail_rate,
        seed=args.seed,
        concurrency=args.concurrency,
        window=args.window,
        model=args.model,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        keep_logs=args.keep_logs,
        say=lambda line: print(line, flush=True),
    )
    report(result, as_json=args.json)
    return 0 if result.ok else 1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--duplicate-rate", type=float, default=0.10)
    parser.add_argument("--fail-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--concurrency", type=int, default=50, help="conversations at a time")
    parser.add_argument(
        "--window", type=int, default=3, help="questions ahead of their answers (0: no limit)"
    )
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--log-dir", help="keep the server logs here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary logs")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    if args.deliveries < 2 * args.conversations:
        parser.error("--deliveries must be at least twice --conversations")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    ensure_model(args.model)
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
