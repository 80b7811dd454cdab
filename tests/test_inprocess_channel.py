"""The channel in-process: registered on a real Sanic app with Rasa's own ``register``,
served on a loopback port, driven over HTTP by the emulator (the far side), with a
stand-in for Rasa's Agent that records every ``UserMessage`` and replies through the
message's output channel. Dedup, per-conversation order, webhook reply mode, bad input.
No subprocess: each test takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List

import aiohttp
import pytest
import pytest_asyncio
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic

from rasa_sparkcentral.channel import SparkcentralInput
from rasa_sparkcentral.protocol import HEALTH_PATH, INBOUND_MESSAGE_RECEIVED, WEBHOOK_PATH
from rasa_sparkcentral.testing import processes

# The emulator moves to rasa_sparkcentral.testing.emulator (issue 11): this line follows it.
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from rasa_sparkcentral.testing.emulator.contact import build_envelope, encode_envelope

CONVERSATIONS = "/virtual-agent/conversations/"


class StandInAgent:
    """Plays Rasa's Agent for ``register``'s handler: records each message and answers
    through its output channel. ``wait <seconds> <rest>`` takes that long, then handles
    ``<rest>``; ``say <a> | <b>`` replies with each part in turn; other texts are echoed,
    intents (``/greet``) get no reply. ``peak``: the most turns it ever worked on at once."""

    tracker_store = None

    def __init__(self) -> None:
        self.messages: List[UserMessage] = []
        self.running = 0
        self.peak = 0

    def texts_of(self, conversation_id: str) -> List[str]:
        return [m.text or "" for m in self.messages if m.sender_id == conversation_id]

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self._reply(message, message.text or "")
        finally:
            self.running -= 1

    async def _reply(self, message: UserMessage, text: str) -> None:
        output = message.output_channel
        if text == "boom":
            raise RuntimeError("the stand-in fails this turn on purpose")
        if text.startswith("wait "):
            _, seconds, text = text.split(" ", 2)
            await asyncio.sleep(float(seconds))
        if text.startswith("say "):
            for part in text[4:].split(" | "):
                await output.send_text_message(message.sender_id, part)
        elif not text.startswith("/"):
            await output.send_text_message(message.sender_id, f"echo: {text}")


@dataclass
class Served:
    """The channel on a Sanic app on a loopback port, and the emulator it talks to."""

    emulator: SparkcentralEmulator
    channel: SparkcentralInput
    agent: StandInAgent
    url: str


Serve = Callable[..., Awaitable[Served]]


@pytest_asyncio.fixture(loop_scope="session")
async def serve() -> AsyncIterator[Serve]:
    """``await serve(**channel_settings)``: an emulator, and the channel (with those
    settings on top of the emulator's keys) served in this process; stopped afterwards."""
    stops: List[Callable[[], Awaitable[None]]] = []
    # Sanic rewrites some of its own methods when an app starts ("touch-up"); in test
    # mode it keeps the originals, so that several apps can start in one process.
    test_mode = Sanic.test_mode
    Sanic.test_mode = True

    async def start(**settings: Any) -> Served:
        emulator = SparkcentralEmulator()
        await emulator.start()
        stops.append(emulator.stop)
        credentials: Dict[str, Any] = {
            "base_url": emulator.base_url,
            "shared_secret": emulator.shared_secret,
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            # fast retries: nothing here fails on purpose
            "backoff_base": 0.01,
            # each channel its own embedded journal
            "journal_path": f"{tempfile.mkdtemp(prefix='sc-journal-')}/journal.sqlite3",
        }
        credentials.update(settings)
        channel = SparkcentralInput.from_credentials(credentials)
        app = Sanic(f"inprocess-{uuid.uuid4().hex[:12]}")
        agent = StandInAgent()
        app.ctx.agent = agent
        register([channel], app, route="/webhooks/")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
        assert server is not None
        await server.startup()
        await server.before_start()
        await server.after_start()

        async def stop() -> None:
            await server.before_stop()
            server.close()
            await server.wait_closed()
            await server.after_stop()  # the channel lets its turns finish and closes

        stops.append(stop)
        url = f"http://127.0.0.1:{port}"
        emulator.webhook_url = url + WEBHOOK_PATH
        return Served(emulator, channel, agent, url)

    try:
        yield start
    finally:
        for stop in reversed(stops):
            await stop()
        Sanic.test_mode = test_mode


async def idle(served: Served) -> None:
    """Wait until the channel has no turn running or queued."""
    while served.channel.pending_conversations:
        await asyncio.sleep(0.005)


# ----------------------------------------------------------------------------- dedup


@pytest.mark.parametrize("concurrent", [False, True], ids=["one-after-another", "at-once"])
async def test_a_repeated_delivery_is_handled_once(serve: Serve, concurrent: bool) -> None:
    served = await serve()
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    result = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED,
        {"conversationId": cid, "message": {"text": "only once"}},
        copies=4,
        concurrent=concurrent,
    )
    assert [r.status for r in result.results] == [200] * 4
    # a late retry of the same delivery, after the turn is over
    await idle(served)
    late = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED,
        {"conversationId": cid, "message": {"text": "only once"}},
        idempotency_key=result.idempotency_key,
    )
    assert late.status == 200
    await idle(served)
    assert served.agent.texts_of(cid) == [
        "/restart",
        "only once",
    ]  # STARTED: no greeting by default
    assert emu.bot_texts(cid) == ["echo: only once"]
    [message] = [m for m in served.agent.messages if m.text == "only once"]
    assert message.message_id == result.idempotency_key


# ----------------------------------------------------------------------------- order


async def test_each_conversation_keeps_its_order_while_they_run_side_by_side(
    serve: Serve,
) -> None:
    served = await serve()
    emu = served.emulator
    conversations = [(await emu.start_conversation()).conversation_id for _ in range(4)]
    count = 6

    async def contact(cid: str) -> None:
        # each webhook is answered before the next is sent: that is the arrival order;
        # the earlier a message, the slower the bot is with it
        for i in range(count):
            result = await emu.contact_says(cid, f"wait {0.03 - i * 0.005:.3f} m{i}")
            assert result.status == 200 and result.json == {}

    await asyncio.gather(*(contact(cid) for cid in conversations))
    for cid in conversations:
        texts = await emu.wait_for_bot_messages(cid, count, timeout=20)
        assert texts == [f"echo: m{i}" for i in range(count)]
        handled = [t.split()[-1] for t in served.agent.texts_of(cid) if t.startswith("wait")]
        assert handled == [f"m{i}" for i in range(count)]
    # the conversations did not wait for each other
    assert served.agent.peak > 1


# ----------------------------------------------------------------------------- reply mode


async def test_webhook_mode_answers_with_the_first_message_and_sends_the_rest_in_order(
    serve: Serve,
) -> None:
    served = await serve(reply_mode="webhook")
    emu = served.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    assert started.json == {}  # the stand-in says nothing on /restart and /greet

    one = await emu.contact_says(cid, "say first | second | third")
    assert one.json == {"sendMessage": {"text": "first"}}
    await emu.wait_for_bot_messages(cid, 3)
    assert [c.json for c in emu.calls_to(CONVERSATIONS + cid, "POST")] == [
        {"sendMessage": {"text": "second"}},
        {"sendMessage": {"text": "third"}},
    ]

    # two turns in flight: what the first answer can't carry goes before the second answer,
    # however slow the REST API is
    emu.faults.delay = 0.2
    first_turn = asyncio.ensure_future(emu.contact_says(cid, "wait 0.05 say a | b"))
    await emu.wait_for(lambda: "wait 0.05 say a | b" in served.agent.texts_of(cid))
    second = await emu.contact_says(cid, "c")
    assert (await first_turn).json == {"sendMessage": {"text": "a"}}
    assert second.json == {"sendMessage": {"text": "echo: c"}}
    assert emu.bot_texts(cid)[3:] == ["a", "b", "echo: c"]
    assert [a.get("sendMessage") for a in emu.rest_actions_for(cid)][-1] == {"text": "b"}


# ----------------------------------------------------------------------------- bad input


async def test_bad_input_is_refused_and_reaches_nothing(serve: Serve) -> None:
    served = await serve(max_body_bytes=2048)
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    await idle(served)  # the assignment's turn runs after its 200
    before = list(served.agent.messages)
    data = {"conversationId": cid, "message": {"text": "hi"}}

    wrong = await emu.deliver(INBOUND_MESSAGE_RECEIVED, data, signature="0" * 64)
    unsigned = await emu.deliver(INBOUND_MESSAGE_RECEIVED, data, sign=False)
    assert (wrong.status, unsigned.status) == (401, 401)
    malformed = await emu.deliver(INBOUND_MESSAGE_RECEIVED, data, raw_body=b'{"type": ')
    no_conversation = await emu.deliver(INBOUND_MESSAGE_RECEIVED, {"message": {"text": "x"}})
    assert (malformed.status, no_conversation.status) == (400, 400)
    too_large = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED, {"conversationId": cid, "message": {"text": "x" * 4096}}
    )
    assert too_large.status == 413
    unknown = await emu.deliver("CONVERSATION_TRANSFERRED_TO_MARS", data)
    assert (unknown.status, unknown.json) == (200, {})

    await idle(served)
    assert served.agent.messages == before
    assert emu.rest_actions_for(cid) == []


async def test_health_check(serve: Serve) -> None:
    served = await serve()
    async with aiohttp.ClientSession() as session, session.get(
        served.url + HEALTH_PATH
    ) as response:
        assert response.status == 200
        body = await response.json()
    assert (body["status"], body["channel"]) == ("ok", "sparkcentral")
    assert body["journal"]["backend"] == "sqlite"
    assert set(body["journal"]) >= {"accepted", "finished", "replayed", "pending", "failed"}
    assert set(body["outbox"]) >= {"pending", "sent", "given_up"}


async def test_health_counts_what_the_journal_accepted_and_finished(serve: Serve) -> None:
    served = await serve()
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    await emu.contact_says(cid, "hello")
    await emu.wait_for_bot_messages(cid, 1)
    await idle(served)
    async with aiohttp.ClientSession() as session, session.get(
        served.url + HEALTH_PATH
    ) as response:
        body = await response.json()
    assert body["journal"]["accepted"] == body["journal"]["finished"] == 2
    assert body["journal"]["pending"] == 0
    assert body["outbox"]["sent"] == 1


async def test_a_stopping_channel_is_unready_and_refuses_new_webhooks(serve: Serve) -> None:
    served = await serve()
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    await idle(served)
    await served.channel.stop_taking_work()
    async with aiohttp.ClientSession() as session, session.get(
        served.url + HEALTH_PATH
    ) as response:
        assert response.status == 503
        assert await response.json() == {"status": "stopping"}
    refused = await emu.contact_says(cid, "too late")
    assert refused.status == 503
    assert "too late" not in served.agent.texts_of(cid)


# ----------------------------------------------------------------------------- webhook_port


async def test_the_webhook_port_hands_events_to_rasas_loop_in_order_once(serve: Serve) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = await serve(webhook_port=port, webhook_host="127.0.0.1")
    emu = served.emulator
    emu.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    cid = (await emu.start_conversation()).conversation_id
    for i in range(5):
        result = await emu.contact_says(cid, f"wait {0.02 - i * 0.004:.3f} m{i}")
        assert (result.status, result.json) == (200, {})
    repeated = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED, {"conversationId": cid, "message": {"text": "m5"}}, copies=3
    )
    assert [r.status for r in repeated.results] == [200] * 3
    wrong = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED, {"conversationId": cid, "message": {"text": "x"}}, sign=False
    )
    assert wrong.status == 401
    texts = await emu.wait_for_bot_messages(cid, 6)
    await idle(served)
    assert emu.bot_texts(cid) == texts == [f"echo: m{i}" for i in range(6)]


async def _port_serve(serve: Serve, **settings: Any) -> Served:
    """The channel with ``webhook_port``; the emulator posts there."""
    port = processes.free_port()
    served = await serve(webhook_port=port, webhook_host="127.0.0.1", **settings)
    served.emulator.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    return served


async def _listening(served: Served, timeout: float = 20.0) -> None:
    """Until the webhook_port listener answers its health check."""
    url = served.emulator.webhook_url.replace(WEBHOOK_PATH, HEALTH_PATH)
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the listener never came back"
            await asyncio.sleep(0.05)


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (not reaped yet) has ended too
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


async def test_the_webhook_port_listener_is_a_process_that_rasa_starts_again(
    serve: Serve,
) -> None:
    """The listener runs beside Rasa's process (no GIL shared); killed, it is started
    again and the port answers as before; nothing it acknowledged is lost."""
    served = await _port_serve(serve)
    listener = served.channel.turns.listener
    assert listener is not None and listener.starts == 1
    first = listener.pid
    assert first is not None and first != os.getpid()
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    assert (await emu.contact_says(cid, "before")).status == 200
    os.kill(first, signal.SIGKILL)
    await _listening(served)
    assert listener.starts == 2 and listener.pid not in (None, first)
    assert (await emu.contact_says(cid, "after")).status == 200
    await emu.wait_for_bot_messages(cid, 2)
    await idle(served)
    assert emu.bot_texts(cid) == ["echo: before", "echo: after"]
    counts = await served.channel.journal.counts()
    assert counts.accepted == 3 and counts.pending == 0  # the start and two messages


async def test_the_listener_follows_the_journals_new_worker(serve: Serve) -> None:
    """The embedded journal's worker dies: the listener, whose socket to it is gone,
    answers 503 (never 200 unrecorded) until a listener with a socket to a new worker
    takes its place; Sparkcentral's retry is then recorded and answered once."""
    served = await _port_serve(serve)
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    await idle(served)
    listener = served.channel.turns.listener
    assert listener is not None
    old = listener.pid
    worker = served.channel.journal.db.worker_pid  # type: ignore[attr-defined]
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    while not _ended(worker):
        await asyncio.sleep(0.01)
    key = uuid.uuid4().hex
    body = encode_envelope(
        build_envelope(
            INBOUND_MESSAGE_RECEIVED,
            {"conversationId": cid, "message": {"text": "retried"}},
            idempotency_key=key,
        )
    )
    refused = await emu.deliver(INBOUND_MESSAGE_RECEIVED, None, raw_body=body, idempotency_key=key)
    assert refused.status == 503
    # the new listener listens beside the old one, which then ends
    deadline = asyncio.get_running_loop().time() + 20
    while listener.starts < 2 or old is None or not _ended(old):
        assert asyncio.get_running_loop().time() < deadline, "the old listener is still there"
        await asyncio.sleep(0.05)
    retried = await emu.deliver(INBOUND_MESSAGE_RECEIVED, None, raw_body=body, idempotency_key=key)
    assert retried.status == 200
    await emu.wait_for_bot_messages(cid, 1)
    await idle(served)
    assert emu.bot_texts(cid) == ["echo: retried"]
    assert served.channel.journal.db.worker_pid not in (None, worker)  # type: ignore[attr-defined]


async def test_a_stopping_bot_s_listener_answers_503(serve: Serve) -> None:
    """SIGTERM (Rasa's before-stop): the listener's health check and new webhooks get
    503, as on Rasa's port; the health report names the listener."""
    served = await _port_serve(serve)
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    async with aiohttp.ClientSession() as session, session.get(served.url + HEALTH_PATH) as got:
        report = await got.json()
    listener = served.channel.turns.listener
    assert listener is not None
    assert report["webhook_listener"] == {
        "port": int(emu.webhook_url.split(":")[2].split("/")[0]),
        "pid": listener.pid,
        "starts": 1,
    }
    await served.channel.turns.stop_taking_work()
    refused = await emu.contact_says(cid, "too late")
    assert (refused.status, refused.json) == (503, {"error": "the bot is stopping; retry later"})
    health = emu.webhook_url.replace(WEBHOOK_PATH, HEALTH_PATH)
    async with aiohttp.ClientSession() as session, session.get(health) as response:
        assert response.status == 503


async def test_a_taken_webhook_port_stops_the_start(serve: Serve) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            await serve(webhook_port=port, webhook_host="127.0.0.1")


# ----------------------------------------------------------------------------- issue 13


async def test_bad_conversation_ids_are_refused(serve: Serve) -> None:
    served = await serve()
    emu = served.emulator
    for cid in ["\ud800-lone-surrogate", "x" * 257]:
        envelope = {
            "type": INBOUND_MESSAGE_RECEIVED,
            "idempotencyKey": uuid.uuid4().hex,
            "data": {"conversationId": cid, "message": {"text": "hi"}},
        }
        # a lone surrogate only exists escaped in JSON (json.dumps escapes it)
        result = await emu.deliver(
            INBOUND_MESSAGE_RECEIVED, None, raw_body=json.dumps(envelope).encode()
        )
        assert result.status == 400
    longest = "y" * 256
    accepted = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED, {"conversationId": longest, "message": {"text": "hi"}}
    )
    assert accepted.status == 200
    await idle(served)
    assert [m.sender_id for m in served.agent.messages] == [longest]


@pytest.mark.parametrize("port", [False, True], ids=["rasa-port", "webhook-port"])
async def test_no_200_without_a_record(serve: Serve, port: bool) -> None:
    """The journal cannot write: 503 (Sparkcentral retries), and nothing runs."""
    settings: Dict[str, Any] = {}
    if port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            settings = {"webhook_port": probe.getsockname()[1], "webhook_host": "127.0.0.1"}
    served = await serve(**settings)
    emu = served.emulator
    if port:
        emu.webhook_url = f"http://127.0.0.1:{settings['webhook_port']}{WEBHOOK_PATH}"
    cid = (await emu.start_conversation()).conversation_id
    await idle(served)
    before = list(served.agent.messages)
    await served.channel.journal.close()
    refused = await emu.contact_says(cid, "lost?")
    assert refused.status == 503
    await idle(served)
    assert served.agent.messages == before


async def test_slash_text_from_a_contact_is_not_a_command(serve: Serve) -> None:
    """Without Rasa's NLU at hand (this stand-in agent has none) the text is shielded so
    that Rasa's regex handler does not read it; with ``trust_slash_commands`` it passes."""
    served = await serve()
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    await emu.contact_says(cid, "/restart")
    await idle(served)
    assert served.agent.texts_of(cid)[-1] == "\u200b/restart"
    trusting = await serve(trust_slash_commands=True)
    cid = (await trusting.emulator.start_conversation()).conversation_id
    await trusting.emulator.contact_says(cid, "/restart")
    await idle(trusting)
    assert trusting.agent.texts_of(cid)[-1] == "/restart"


def _carries_details(message: UserMessage) -> bool:
    block = (message.metadata or {})["sparkcentral"]
    assert block["conversationId"] == message.sender_id and "messageId" in block
    return "contactProfile" in block


async def test_opted_in_every_message_carries_the_details(serve: Serve) -> None:
    served = await serve(details_in_every_message=True)
    cid = (await served.emulator.start_conversation()).conversation_id
    for text in ("one", "two"):
        await served.emulator.contact_says(cid, text)
    await idle(served)
    assert [_carries_details(m) for m in served.agent.messages] == [True, True, True]


async def test_by_default_only_messages_whose_details_are_new_to_rasa_carry_them(
    serve: Serve,
) -> None:
    served = await serve()
    emu = served.emulator
    cid = (await emu.start_conversation(name="Anna")).conversation_id
    for text in ("one", "two"):
        await emu.contact_says(cid, text)
    # Inbox 2.0 repeats the details with each message: a changed profile is new to Rasa
    changed = {"conversationId": cid, "message": {"text": "three"}, "contactProfile": {"id": "p2"}}
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, changed)).status == 200
    changed["message"] = {"text": "four"}  # the same again: not new
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, changed)).status == 200
    await emu.hand_back(cid)  # an assignment (its profile differs from p2)
    await emu.contact_says(cid, "five")
    # the same assignment again: it restarts the conversation (empty slots), so again
    await emu.hand_back(cid)
    await idle(served)
    messages = [m for m in served.agent.messages if m.sender_id == cid]
    assert [(m.text, _carries_details(m)) for m in messages] == [
        ("/restart", True),
        ("one", False),
        ("two", False),
        ("three", True),
        ("four", False),
        ("/restart", True),
        ("five", False),
        ("/restart", True),
    ]
    assert messages[3].metadata["sparkcentral"]["contactProfile"] == {"id": "p2"}

    # a turn that failed may not have given them: the next message carries them again
    fresh = "conv-never-assigned"
    data = {"conversationId": fresh, "message": {"text": "boom"}, "medium": {"id": "sms"}}
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, data)).status == 200
    data["message"] = {"text": "after"}
    assert (await emu.deliver(INBOUND_MESSAGE_RECEIVED, data)).status == 200
    await idle(served)
    got = [(m.text, _carries_details(m)) for m in served.agent.messages if m.sender_id == fresh]
    assert got == [("boom", True), ("after", True)]


@pytest.mark.parametrize("port", [False, True], ids=["rasa-port", "webhook-port"])
async def test_redis_killed_then_frozen_gives_503s_and_loses_nothing(
    serve: Serve, tmp_path: Path, port: bool
) -> None:
    """The Redis journal's server (append-only file on) is killed, then frozen: every
    webhook meanwhile gets 503 (none hangs, none gets 200 unrecorded); Sparkcentral's
    retries afterwards are answered, once each, in order."""
    redis_port = processes.free_port()
    redis = processes.redis_server(redis_port, tmp_path / "redis", tmp_path / "redis.log")
    redis.argv[redis.argv.index("--appendonly") + 1] = "yes"
    redis.argv += ["--appendfsync", "always"]
    redis.start()
    await redis.wait_ready_async()
    try:
        settings: Dict[str, Any] = {
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "claim_after": 1.5,
        }
        if port:
            settings.update(webhook_port=processes.free_port(), webhook_host="127.0.0.1")
        served = await serve(**settings)
        emu = served.emulator
        if port:
            emu.webhook_url = f"http://127.0.0.1:{settings['webhook_port']}{WEBHOOK_PATH}"
        cid = (await emu.start_conversation()).conversation_id
        assert (await emu.contact_says(cid, "m0")).status == 200
        await emu.wait_for_bot_messages(cid, 1)
        await idle(served)

        async def outage(
            text: str, begin: Callable[[], None], end: Callable[[], Awaitable[None]]
        ) -> None:
            data = {"conversationId": cid, "message": {"text": text}}
            key = uuid.uuid4().hex
            # one delivery and, after the outage, its retry (same bytes): sent as built
            # here, so that the emulator's own retry rule does not hand the conversation
            # over while Redis is down
            body = encode_envelope(
                build_envelope(INBOUND_MESSAGE_RECEIVED, data, idempotency_key=key)
            )
            begin()
            refused = await emu.deliver(
                INBOUND_MESSAGE_RECEIVED, None, raw_body=body, idempotency_key=key
            )
            assert refused.status == 503
            await end()
            retried = await emu.deliver(
                INBOUND_MESSAGE_RECEIVED, None, raw_body=body, idempotency_key=key
            )
            assert retried.status == 200

        async def restart() -> None:
            redis.stop()
            redis.start()
            await redis.wait_ready_async()

        async def thaw() -> None:
            assert redis.pid is not None
            os.kill(redis.pid, signal.SIGCONT)

        await outage("m1", lambda: os.killpg(redis.pid or 0, signal.SIGKILL), restart)
        await outage("m2", lambda: os.kill(redis.pid or 0, signal.SIGSTOP), thaw)
        await emu.wait_for_bot_messages(cid, 3)
        await idle(served)
        assert emu.bot_texts(cid) == ["echo: m0", "echo: m1", "echo: m2"]
        assert served.agent.texts_of(cid)[-3:] == ["m0", "m1", "m2"]
    finally:
        if redis.pid is not None and redis.running:
            os.kill(redis.pid, signal.SIGCONT)
        redis.stop()


async def test_the_channel_sets_the_switch_interval_it_is_given(serve: Serve) -> None:
    before = sys.getswitchinterval()
    try:
        await serve(switch_interval=0.0025)
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    finally:
        sys.setswitchinterval(before)
