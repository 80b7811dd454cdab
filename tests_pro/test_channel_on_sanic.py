"""Our channel on Rasa Pro's Sanic, registered by Rasa's own ``register`` (what ``rasa run``
does with credentials.yml) and driven over real HTTP by the emulator's signed webhooks.

Rasa Pro's engine is not started (it needs a licence): a stand-in agent on ``app.ctx``
takes the place of ``Agent.handle_message`` — it records every UserMessage and answers
through the message's own output channel, so the replies travel our REST client to the
emulator.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, AsyncIterator, List, Tuple

import aiohttp
import pytest
from conftest import deprecations_from_us, emulator_module
from rasa.core.channels.channel import UserMessage, register
from sanic import Sanic

emulator = emulator_module()
_app_names = itertools.count()


class RecordingAgent:
    """Stands in for Rasa's Agent: records messages and echoes them back."""

    tracker_store = None

    def __init__(self) -> None:
        self.messages: List[UserMessage] = []

    async def handle_message(self, message: UserMessage) -> None:
        self.messages.append(message)
        text = message.text or ""
        if text == "/restart":
            return
        reply = "Hi!" if text.startswith("/") else f"echo: {text}"
        await message.output_channel.send_text_message(message.sender_id, reply)

    def texts(self, conversation_id: str) -> List[str]:
        return [m.text or "" for m in self.messages if m.sender_id == conversation_id]


class Served:
    def __init__(self, app: Sanic, agent: RecordingAgent, base_url: str) -> None:
        self.app = app
        self.agent = agent
        self.base_url = base_url
        self.warnings: List[warnings.WarningMessage] = []


async def _start_sanic(app: Sanic) -> Tuple[Any, str]:
    server = await app.create_server(
        host="127.0.0.1", port=0, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    port = server.server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _stop_sanic(server: Any) -> None:
    """What Sanic does on shutdown: the before-stop listeners (the channel stops taking
    work), closing, the after-stop listeners (the channel closes its stores)."""
    await server.before_stop()
    await server.close()
    await server.wait_closed()
    await server.after_stop()


@pytest.fixture
async def served() -> AsyncIterator[Tuple[Served, Any]]:
    from rasa_sparkcentral import SparkcentralInput

    Sanic.test_mode = True
    emu = emulator.SparkcentralEmulator()
    await emu.start()
    channel = SparkcentralInput.from_credentials(
        {
            "client_id": emulator.DEFAULT_CLIENT_ID,
            "client_secret": emulator.DEFAULT_CLIENT_SECRET,
            "shared_secret": emulator.DEFAULT_SHARED_SECRET,
            "base_url": emu.base_url,
            "conversation_started_intent": "greet",
        }
    )
    app = Sanic(f"pro_tier_{next(_app_names)}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        register([channel], app, route="/webhooks/")
        server, base_url = await _start_sanic(app)
        handle = Served(app, agent, base_url)
        emu.webhook_url = f"{base_url}/webhooks/sparkcentral/webhook"
        try:
            yield handle, emu
        finally:
            await _stop_sanic(server)
            await emu.stop()
    handle.warnings.extend(records)


async def test_health_route_is_served(served: Tuple[Served, Any]) -> None:
    handle, _ = served
    url = f"{handle.base_url}/webhooks/sparkcentral/"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert (await response.json())["channel"] == "sparkcentral"


async def test_signed_webhooks_become_user_messages_and_replies_reach_sparkcentral(
    served: Tuple[Served, Any],
) -> None:
    handle, emu = served
    started = await emu.start_conversation(name="Ann")
    assert started.status == 200
    cid = started.conversation_id
    assert await emu.wait_for_bot_messages(cid, 1) == ["Hi!"]
    assert handle.agent.texts(cid) == ["/restart", "/greet"]

    said = await emu.contact_says(cid, "where is my parcel?")
    assert said.status == 200
    assert await emu.wait_for_bot_messages(cid, 2) == ["Hi!", "echo: where is my parcel?"]

    # the assignment's messages carry the channel details; the next only its own block
    first, message = handle.agent.messages[0], handle.agent.messages[-1]
    assert first.metadata is not None
    assert first.metadata["sparkcentral"]["contactProfile"]["primaryIdentifier"] == "Ann"
    assert message.sender_id == cid
    assert message.input_channel == "sparkcentral"
    assert message.metadata is not None
    details = message.metadata["sparkcentral"]
    assert details["conversationId"] == cid
    assert "contactProfile" not in details


async def test_bad_signature_is_refused_before_rasa(served: Tuple[Served, Any]) -> None:
    handle, emu = served
    from rasa_sparkcentral.protocol import SIGNATURE_HEADER

    body = b'{"type": "INBOUND_MESSAGE_RECEIVED", "data": {}}'
    async with aiohttp.ClientSession() as http, http.post(
        emu.webhook_url,
        data=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: "0" * 64},
    ) as response:
        assert response.status == 401
    assert handle.agent.messages == []


async def test_serving_raises_no_deprecation_from_our_listeners() -> None:
    """Sanic 25 deprecates listeners that take ``loop`` (removed in Sanic 26.6)."""
    from rasa_sparkcentral import SparkcentralInput

    Sanic.test_mode = True
    channel = SparkcentralInput.from_credentials(
        {"shared_secret": emulator.DEFAULT_SHARED_SECRET, "reply_mode": "webhook"}
    )
    app = Sanic(f"pro_tier_{next(_app_names)}")
    app.ctx.agent = RecordingAgent()
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        register([channel], app, route="/webhooks/")
        server, _ = await _start_sanic(app)
        await _stop_sanic(server)
    found = deprecations_from_us(records)
    assert found == []


async def test_the_webhook_port_listener_runs_beside_rasa_pro(tmp_path: Any) -> None:
    """``webhook_port``: the listener is a child process started with this interpreter
    (here Python 3.11 and Rasa Pro's aiohttp); it records and answers, Rasa's loop runs
    the turn, and it ends when the server stops."""
    import os
    import sys

    from rasa_sparkcentral import SparkcentralInput
    from rasa_sparkcentral.protocol import WEBHOOK_PATH
    from rasa_sparkcentral.testing import processes

    Sanic.test_mode = True
    emu = emulator.SparkcentralEmulator()
    await emu.start()
    port = processes.free_port()
    channel = SparkcentralInput.from_credentials(
        {
            "client_id": emulator.DEFAULT_CLIENT_ID,
            "client_secret": emulator.DEFAULT_CLIENT_SECRET,
            "shared_secret": emulator.DEFAULT_SHARED_SECRET,
            "base_url": emu.base_url,
            "webhook_port": port,
            "webhook_host": "127.0.0.1",
            "journal_path": str(tmp_path / "journal.sqlite3"),
        }
    )
    app = Sanic(f"pro_tier_{next(_app_names)}")
    agent = RecordingAgent()
    app.ctx.agent = agent
    register([channel], app, route="/webhooks/")
    server, _ = await _start_sanic(app)
    emu.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    try:
        listener = channel.turns.listener
        assert listener is not None and listener.pid is not None
        pid = listener.pid
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            assert cmdline.read().split(b"\0")[0] == sys.executable.encode()
        cid = (await emu.start_conversation()).conversation_id
        said = await emu.contact_says(cid, "hello")
        assert (said.status, said.json) == (200, {})
        assert await emu.wait_for_bot_messages(cid, 1) == ["echo: hello"]
        assert agent.texts(cid) == ["/restart", "hello"]
    finally:
        await _stop_sanic(server)
        await emu.stop()
    assert not os.path.exists(f"/proc/{pid}")
