"""What the channel itself costs per message, without Rasa's own work.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/channel_cost.py
    PYTHONPATH=$PWD .venv/bin/python benchmarks/channel_cost.py --busy-ms 0 --seconds 5

A server process serves this channel and Rasa's REST channel on one real Sanic app, with
Rasa's own ``register`` and a stand-in for Rasa's Agent that answers every message with one
text (``--busy-ms``, 20 by default: after computing that long, with a 2 ms wait on I/O
half-way and short GIL releases, as Rasa's turn has). This process plays the emulator and
the contacts: ``--conversations`` conversations each send message after message (closed
loop) for ``--seconds``, in alternating REST and Sparkcentral rounds. The figure is the
server process's CPU (user + system, all threads: webhook, journal, outbox, REST client)
per message, the channel's and REST's side by side; their difference is what the channel
adds to a turn. In ``make bench`` the same difference is buried in Rasa's run-to-run noise.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

READY = "channel-cost server ready"
SC_PATH = "/webhooks/sparkcentral/webhook"
REST_PATH = "/webhooks/rest/webhook"


# ------------------------------------------------------------------ the server process


def _busy(seconds: float, release: bool) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(300))
        if release:
            time.sleep(0)  # Rasa's NumPy and I/O calls let other threads run


async def serve(port: int, emulator_url: str, busy: float) -> None:
    from rasa.core.channels.channel import UserMessage, register
    from rasa.core.channels.rest import RestInput
    from sanic import Sanic

    from rasa_sparkcentral.channel import SparkcentralInput
    from rasa_sparkcentral.testing.emulator import (
        DEFAULT_CLIENT_ID,
        DEFAULT_CLIENT_SECRET,
        DEFAULT_SHARED_SECRET,
    )

    class StandInAgent:
        tracker_store = None

        async def handle_message(self, message: UserMessage) -> None:
            if busy:
                _busy(busy / 2, release=True)
                await asyncio.sleep(0.002)
                _busy(busy / 2, release=True)
            await message.output_channel.send_text_message(message.sender_id, "answer")

    channel = SparkcentralInput.from_credentials(
        {
            "base_url": emulator_url,
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "shared_secret": DEFAULT_SHARED_SECRET,
            "journal_path": f"{tempfile.mkdtemp(prefix='channel-cost-')}/journal.sqlite3",
            "conversation_started_intent": None,
        }
    )
    app = Sanic(f"channel-cost-{uuid.uuid4().hex[:8]}")
    app.ctx.agent = StandInAgent()
    register([channel, RestInput()], app, route="/webhooks/")
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    print(READY, flush=True)
    await asyncio.Event().wait()


# ------------------------------------------------------------------ the driving process


async def drive(args: argparse.Namespace) -> List[Dict[str, Any]]:
    import aiohttp

    from rasa_sparkcentral.protocol import SIGNATURE_HEADER
    from rasa_sparkcentral.testing import processes
    from rasa_sparkcentral.testing.emulator import (
        EVENT_INBOUND_MESSAGE_RECEIVED,
        SparkcentralEmulator,
        build_envelope,
        encode_envelope,
    )

    port, emulator_port = processes.free_port(), processes.free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            *("--serve", str(port), f"http://127.0.0.1:{emulator_port}"),
            *("--busy-ms", str(args.busy_ms)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    emulator = SparkcentralEmulator(webhook_url=f"http://127.0.0.1:{port}{SC_PATH}")
    await emulator.start(port=emulator_port)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def sc_says(cid: str, text: str) -> None:
        seen = len(emulator.bot_texts(cid))
        body = encode_envelope(
            build_envelope(
                EVENT_INBOUND_MESSAGE_RECEIVED, {"conversationId": cid, "message": {"text": text}}
            )
        )
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: emulator.sign(body)}
        async with session.post(
            f"http://127.0.0.1:{port}{SC_PATH}", data=body, headers=headers
        ) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"webhook answered {r.status}")
        await emulator.wait_for_bot_messages(cid, count=seen + 1, timeout=30)

    async def rest_says(cid: str, text: str) -> None:
        url = f"http://127.0.0.1:{port}{REST_PATH}"
        async with session.post(url, json={"sender": cid, "message": text}) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"REST answered {r.status}")

    async def one_round(
        channel: str, says: Callable[[str, str], Awaitable[None]], index: int
    ) -> Dict[str, Any]:
        ids = [f"cost-{index}-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.conversations)]
        if channel == "Sparkcentral":
            for cid in ids:
                await emulator.start_conversation(cid)
        await asyncio.gather(*(says(cid, "hi") for cid in ids))  # untimed first turn
        messages = 0
        cpu_before, started = processes.cpu_seconds(server.pid), time.perf_counter()
        deadline = started + args.seconds

        async def converse(cid: str) -> None:
            nonlocal messages
            while time.perf_counter() < deadline:
                await says(cid, "question")
                messages += 1

        await asyncio.gather(*(converse(cid) for cid in ids))
        seconds = time.perf_counter() - started
        cpu = processes.cpu_seconds(server.pid) - cpu_before
        print(
            f"  {channel:<12} {messages / seconds:8.1f} msg/s, server CPU "
            f"{cpu / messages * 1e6:7.0f} µs per message",
            flush=True,
        )
        return {"channel": channel, "messages": messages, "seconds": seconds, "cpu": cpu}

    results: List[Dict[str, Any]] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.strip() == READY:
                break
        else:
            raise RuntimeError("the server process did not start")
        for round_index in range(args.pairs * 2):
            channel = "REST" if round_index % 2 == 0 else "Sparkcentral"
            results.append(
                await one_round(channel, rest_says if channel == "REST" else sc_says, round_index)
            )
    finally:
        await session.close()
        await emulator.stop()
        server.terminate()
        server.wait(timeout=10)
    return results


def summary(results: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    def per_message(channel: str) -> float:
        rounds = [r for r in results if r["channel"] == channel]
        return sum(r["cpu"] for r in rounds) / sum(r["messages"] for r in rounds) * 1e6

    def rate(channel: str) -> float:
        rounds = [r for r in results if r["channel"] == channel]
        return sum(r["messages"] for r in rounds) / sum(r["seconds"] for r in rounds)

    rest, sc = per_message("REST"), per_message("Sparkcentral")
    agent = f"busy {args.busy_ms:g} ms per turn" if args.busy_ms else "answering at once"
    return (
        f"stand-in agent {agent}, {args.conversations} conversations, "
        f"{args.pairs} round(s) of {args.seconds:g} s per channel: server CPU per message "
        f"REST {rest:.0f} µs, Sparkcentral {sc:.0f} µs: the channel adds {sc - rest:.0f} µs "
        f"(throughput {rate('REST'):.1f} and {rate('Sparkcentral'):.1f} msg/s)"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--serve", nargs=2, metavar=("PORT", "EMULATOR_URL"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--busy-ms", type=float, default=20.0, help="the stand-in's turn, ms of CPU (20)"
    )
    parser.add_argument("--conversations", type=int, default=50, help="at once (50)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round (10)")
    parser.add_argument("--pairs", type=int, default=2, help="REST + Sparkcentral rounds (2)")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), args.serve[1], args.busy_ms / 1000))
        return 0
    results = asyncio.run(drive(args))
    print(summary(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
