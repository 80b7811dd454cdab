"""Chaos run (issue 13): load while ``rasa run`` is SIGKILLed, Redis frozen and
Sparkcentral failing, at random; then every acknowledged message must be answered.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/chaos.py --seconds 90 --conversations 12

One ``rasa run`` (example bot, action server, Redis tracker/lock stores, the channel's
journal and outbox in Redis with ``claim_after: 3``; Redis with its append-only file on
so a killed Redis keeps what it acknowledged), the emulator in this process. Each
conversation's contact asks the two questions in turn, one at a time, as Sparkcentral
would: a delivery that gets no 200 (503, connection refused, timeout) is sent again with
the same idempotencyKey until it gets one. Every ``--every`` seconds (±50%) one fault:
SIGKILL ``rasa run`` and start it again; SIGKILL Redis and start it again; SIGSTOP Redis
for 5 s; Sparkcentral answering 503 to everything for 8 s. After ``--seconds`` the load
stops, faults end, and the run waits (at most 180 s) for the replies.

Prints: acknowledged messages, 503s/failed deliveries, faults, replies missing,
duplicated, out of order. Exits 0 when missing = out-of-order = 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from rasa_sparkcentral.testing import processes  # noqa: E402
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator  # noqa: E402

BOT_DIR = REPO_ROOT / "example_bot"
MODEL = BOT_DIR / "models" / "example_bot.tar.gz"
INBOUND = "INBOUND_MESSAGE_RECEIVED"


def _responses() -> Dict[str, str]:
    domain = yaml.safe_load((BOT_DIR / "domain.yml").read_text(encoding="utf-8"))
    return {name: str(v[0].get("text", "")) for name, v in domain["responses"].items()}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--every", type=float, default=12)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    texts = _responses()
    questions = [
        ("what are your opening hours?", texts["utter_opening_hours"]),
        ("how long does shipping take?", texts["utter_shipping"]),
    ]
    answers = {a for _, a in questions}
    logs = Path(tempfile.mkdtemp(prefix="sparkcentral-chaos-"))
    print(f"chaos: {args.seconds:.0f} s, {args.conversations} conversations; logs in {logs}")

    redis_port = processes.free_port()
    redis = processes.redis_server(redis_port, logs / "redis", logs / "redis.log")
    redis.argv[redis.argv.index("--appendonly") + 1] = "yes"
    redis.argv += ["--appendfsync", "always"]
    redis.start()
    await redis.wait_ready_async()
    emu = SparkcentralEmulator(max_calls=5000, webhook_timeout=10.0)
    await emu.start(host=processes.LOOPBACK, port=0)
    actions = processes.action_server(BOT_DIR, processes.free_port(), logs / "actions.log")
    actions.start()
    credentials = logs / "credentials.yml"
    endpoints = logs / "endpoints.yml"
    processes.write_credentials(
        credentials,
        base_url=emu.base_url,
        shared_secret=emu.shared_secret,
        client_id=emu.client_id,
        client_secret=emu.client_secret,
        redis_url=f"redis://127.0.0.1:{redis_port}/2",
        claim_after=3,
    )
    processes.write_endpoints(
        endpoints,
        action_url=f"{actions.url}/webhook",
        tracker_store=processes.redis_tracker_store(redis_port, db=0),
        lock_store=processes.redis_lock_store(redis_port, db=1),
    )
    rasa = processes.rasa_server(
        BOT_DIR,
        MODEL,
        processes.free_port(),
        credentials,
        endpoints,
        logs / "rasa.log",
        env={"TICKET_LOCK_LIFETIME": "5"},
    )
    rasa.start()
    await asyncio.gather(rasa.wait_ready_async(), actions.wait_ready_async())
    emu.webhook_url = f"{rasa.url}/webhooks/sparkcentral/webhook"

    acknowledged: Dict[str, List[str]] = {}
    refused = 0
    faults: List[str] = []
    stop_at = time.monotonic() + args.seconds

    async def contact(cid: str) -> None:
        nonlocal refused
        i = 0
        while time.monotonic() < stop_at:
            text, answer = questions[i % 2]
            key = uuid.uuid4().hex
            data = {"conversationId": cid, "message": {"text": text}}
            while True:  # Sparkcentral retries until it gets a 200
                try:
                    result = await emu.deliver(INBOUND, data, idempotency_key=key)
                    if result.status == 200:
                        break
                except Exception:  # refused connection, timeout
                    pass
                refused += 1
                await asyncio.sleep(1.0)
            acknowledged[cid].append(answer)
            i += 1
            # the contact reads the answer (or gives up waiting) before asking again
            for _ in range(20):
                if len([t for t in emu.bot_texts(cid) if t in answers]) >= i:
                    break
                await asyncio.sleep(0.25)

    async def chaos() -> None:
        while time.monotonic() < stop_at - 10:
            await asyncio.sleep(args.every * rng.uniform(0.5, 1.5))
            kind = rng.choice(["kill rasa", "kill redis", "freeze redis", "platform 503"])
            faults.append(kind)
            print(f"  {time.strftime('%H:%M:%S')} {kind}")
            if kind == "kill rasa":
                assert rasa.pid is not None
                os.killpg(rasa.pid, signal.SIGKILL)
                await rasa.stop_async()
                rasa.start()
                await rasa.wait_ready_async()
            elif kind == "kill redis":
                assert redis.pid is not None
                os.killpg(redis.pid, signal.SIGKILL)
                await redis.stop_async()
                await asyncio.sleep(2)
                redis.start()
                await redis.wait_ready_async()
            elif kind == "freeze redis":
                assert redis.pid is not None
                os.kill(redis.pid, signal.SIGSTOP)
                await asyncio.sleep(5)
                os.kill(redis.pid, signal.SIGCONT)
            else:
                emu.faults.fail_rate = 1.0
                await asyncio.sleep(8)
                emu.faults.fail_rate = 0.0

    try:
        cids = []
        for _ in range(args.conversations):
            started = await emu.start_conversation()
            cids.append(started.conversation_id)
            acknowledged[started.conversation_id] = []
        began = time.monotonic()
        await asyncio.gather(chaos(), *(contact(cid) for cid in cids))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(
                len([t for t in emu.bot_texts(c) if t in answers]) >= len(acknowledged[c])
                for c in cids
            ):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # late duplicates
        settled = time.monotonic() - began
        missing = duplicated = disorder = 0
        for cid in cids:
            got = [t for t in emu.bot_texts(cid) if t in answers]
            want = acknowledged[cid]
            dedup: List[str] = []
            for t in got:  # a repeat right after itself where none is expected
                if dedup and t == dedup[-1] and want[: len(dedup) + 1] != [*dedup, t]:
                    duplicated += 1
                    continue
                dedup.append(t)
            missing += max(0, len(want) - len(dedup))
            disorder += sum(1 for a, b in zip(dedup, want) if a != b)
        total = sum(len(v) for v in acknowledged.values())
        print(
            f"acknowledged {total} messages in {args.seconds:.0f} s; {refused} deliveries "
            f"refused (503 / no answer) and retried; faults: {', '.join(faults) or 'none'}"
        )
        print(
            f"replies: missing {missing}, duplicated {duplicated}, out of order {disorder}; "
            f"all settled {settled:.0f} s after the start"
        )
        return 0 if missing == disorder == 0 else 1
    finally:
        for process in (rasa, actions):
            await process.stop_async()
        if redis.pid is not None and redis.running:
            os.kill(redis.pid, signal.SIGCONT)
        await redis.stop_async()
        await emu.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
