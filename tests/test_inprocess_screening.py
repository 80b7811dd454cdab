"""Both listeners (the Sanic route and the webhook_port listener process) screen alike (issue 12):
either signature header is accepted, an event older or newer than ``max_event_age`` is
refused with 401 and reaches nothing. In-process, with the stand-in agent."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone
from typing import Any, Dict

import pytest

from rasa_sparkcentral.protocol import (
    HOOTSUITE_SIGNATURE_HEADER,
    INBOUND_MESSAGE_RECEIVED,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
)
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.test_inprocess_channel import Serve, Served, idle, serve  # noqa: F401 - fixture

LISTENERS = ["sanic-route", "webhook-port"]


async def listening(serve: Serve, listener: str, **settings: Any) -> Served:  # noqa: F811
    if listener == "sanic-route":
        return await serve(**settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = await serve(webhook_port=port, webhook_host="127.0.0.1", **settings)
    served.emulator.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    return served


def envelope(cid: str, text: str, age: timedelta) -> bytes:
    sent = datetime.now(timezone.utc) - age
    body: Dict[str, Any] = {
        # nanoseconds, as Inbox 2.0 writes them
        "timestamp": sent.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",
        "idempotencyKey": f"key-{text}",
        "version": 1,
        "type": INBOUND_MESSAGE_RECEIVED,
        "data": {"conversationId": cid, "message": {"text": text}},
    }
    return json.dumps(body).encode()


async def post(emu: SparkcentralEmulator, body: bytes, header: str) -> int:
    result = await emu.deliver(
        INBOUND_MESSAGE_RECEIVED, None, raw_body=body, sign=False, headers={header: emu.sign(body)}
    )
    return result.status


@pytest.mark.parametrize("listener", LISTENERS)
async def test_either_header_is_accepted_and_stale_events_reach_nothing(
    serve: Serve,  # noqa: F811
    listener: str,
) -> None:
    served = await listening(serve, listener)
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    fresh = timedelta(seconds=1)
    assert await post(emu, envelope(cid, "classic", fresh), SIGNATURE_HEADER) == 200
    assert await post(emu, envelope(cid, "inbox2", fresh), HOOTSUITE_SIGNATURE_HEADER) == 200
    await emu.wait_for_bot_messages(cid, 2)

    for header in (SIGNATURE_HEADER, HOOTSUITE_SIGNATURE_HEADER):
        assert await post(emu, envelope(cid, "old", timedelta(minutes=10)), header) == 401
        assert await post(emu, envelope(cid, "ahead", timedelta(minutes=-10)), header) == 401
    await idle(served)
    assert [t for t in served.agent.texts_of(cid) if not t.startswith("/")] == [
        "classic",
        "inbox2",
    ]
    assert emu.bot_texts(cid) == ["echo: classic", "echo: inbox2"]


@pytest.mark.parametrize("listener", LISTENERS)
async def test_max_event_age_zero_accepts_an_old_event(
    serve: Serve,  # noqa: F811
    listener: str,
) -> None:
    served = await listening(serve, listener, max_event_age=0)
    emu = served.emulator
    cid = (await emu.start_conversation()).conversation_id
    old = envelope(cid, "from last week", timedelta(days=7))
    assert await post(emu, old, HOOTSUITE_SIGNATURE_HEADER) == 200
    assert await emu.wait_for_bot_messages(cid, 1) == ["echo: from last week"]
