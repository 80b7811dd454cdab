"""Issue 16: what the web inbox reads from the emulator, over real HTTP: the page's files, the
event stream, webhook deliveries, uploaded attachments, the agent resolving (against the real
example bot)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Dict, Tuple

import aiohttp
import pytest_asyncio

from tests.helpers import response_text


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def next_event(stream: aiohttp.ClientResponse) -> Tuple[str, Dict[str, Any]]:
    """The next server-sent event: (event name, its JSON data); comments are skipped."""
    name = "message"
    while True:
        raw = await stream.content.readline()
        assert raw, "the event stream ended"
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            return name, json.loads(line[len("data: ") :])


async def test_page_files_are_served_from_the_package(
    bot: Any, http: aiohttp.ClientSession
) -> None:
    base = bot.emulator.base_url
    async with http.get(f"{base}/_emulator/ui") as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        html = await page.text()
    assert '<script src="/_emulator/ui/inbox.js"' in html
    assert "http://" not in html and "https://" not in html  # nothing from the network
    for name, content_type in (("inbox.js", "text/javascript"), ("inbox.css", "text/css")):
        async with http.get(f"{base}/_emulator/ui/{name}") as asset:
            assert asset.status == 200
            assert asset.content_type == content_type
            assert len(await asset.read()) > 1000
    async with http.get(f"{base}/_emulator/ui/__init__.py") as other:
        assert other.status == 404


async def test_event_stream_says_what_changed(bot: Any, http: aiohttp.ClientSession) -> None:
    base = bot.emulator.base_url
    async with http.get(f"{base}/_emulator/events") as stream:
        assert stream.status == 200
        assert stream.content_type == "text/event-stream"
        name, clock = await next_event(stream)
        assert name == "hello"
        assert isinstance(clock["monotonic"], float) and isinstance(clock["wall"], float)
        async with http.post(f"{base}/_emulator/conversations", json={"name": "Eve"}) as started:
            cid = (await started.json())["conversationId"]
        seen: Dict[str, int] = {}
        while seen.get("call", 0) < 1 or seen.get("webhook", 0) < 1:
            _, event = await next_event(stream)
            if event["conversationId"] == cid:
                seen[event["kind"]] = seen.get(event["kind"], 0) + 1
                assert set(event) == {"kind", "conversationId", "line"}
        assert seen["transcript"] >= 1  # the assignment, then the bot's greeting


async def test_webhooks_attachments_and_the_agent_resolving(
    bot: Any, http: aiohttp.ClientSession
) -> None:
    emu = bot.emulator
    base = emu.base_url
    started = await emu.start_conversation(name="Olga", vip=True)
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    await emu.contact_says(cid, "show me your logo")
    await emu.wait_for(
        lambda: any(e.attachment for e in emu.conversations[cid].transcript),
        description="the logo",
        conversation_id=cid,
    )

    async with http.get(f"{base}/_emulator/webhooks", params={"conversationId": cid}) as answer:
        hooks = (await answer.json())["webhooks"]
    assert [h["eventType"] for h in hooks] == ["CONVERSATION_STARTED", "INBOUND_MESSAGE_RECEIVED"]
    assert all(h["status"] == 200 and h["conversationId"] == cid for h in hooks)
    assert hooks[0]["at"] < hooks[1]["at"]
    async with http.get(f"{base}/_emulator/webhooks", params={"limit": "1"}) as answer:
        assert len((await answer.json())["webhooks"]) == 1

    name = next(e.attachment for e in emu.conversations[cid].transcript if e.attachment)
    async with http.get(f"{base}/_emulator/conversations/{cid}/attachments/{name}") as image:
        assert image.status == 200
        assert image.content_type == "image/png"
        assert (await image.read()).startswith(b"\x89PNG")
    async with http.get(f"{base}/_emulator/conversations/{cid}/attachments/nope.png") as missing:
        assert missing.status == 404

    async with http.get(f"{base}/_emulator/conversations") as listed:
        mine = [c for c in (await listed.json())["conversations"] if c["conversationId"] == cid]
    assert mine[0]["vip"] is True and mine[0]["medium"] == "smooch-rtm"
    assert mine[0]["last"]["sender"] == "bot"

    async with http.post(f"{base}/_emulator/conversations/{cid}/resolve") as resolved:
        assert resolved.status == 200
    assert emu.conversations[cid].queue == "resolved"
    assert emu.conversations[cid].transcript[-1].text == (
        "[RESOLVED by the agent -> conversation closed]"
    )
    async with http.post(f"{base}/_emulator/conversations/unknown/resolve") as unknown:
        assert unknown.status == 404
    assert response_text("utter_logo") in emu.bot_texts(cid)


async def test_stopping_the_emulator_ends_open_streams(
    sparkcentral_emulator: Any, http: aiohttp.ClientSession
) -> None:
    emu = sparkcentral_emulator
    async with http.get(f"{emu.base_url}/_emulator/events") as stream:
        assert (await next_event(stream))[0] == "hello"
        # without ending the stream, aiohttp would wait up to 60 s for it
        await asyncio.wait_for(emu.stop(), 10)
        rest = await asyncio.wait_for(stream.content.read(), 10)
    assert b"data:" not in rest
