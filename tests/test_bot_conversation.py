"""``BotConversation`` (what ``sparkcentral_bot.conversation()`` gives), against the emulator
and a small webhook app on loopback that plays the bot: turns answered in the webhook answer
or later over REST, explicit message counts, handoffs, and the errors that name the cause."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from rasa_sparkcentral.protocol import WEBHOOK_PATH
from rasa_sparkcentral.testing.conversation import BotConversation, TurnError
from rasa_sparkcentral.testing.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    SparkcentralEmulator,
)

Reply = Callable[[str, Dict[str, Any]], Awaitable[Dict[str, Any]]]


class FakeBot:
    """Answers each webhook with ``reply(type, data)``; ``rest(cid, body)`` posts later."""

    def __init__(self, emulator: SparkcentralEmulator) -> None:
        self.emulator = emulator
        self.reply: Optional[Reply] = None
        self.tasks: List[asyncio.Task[None]] = []
        self.runner: Optional[web.AppRunner] = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.emulator.webhook_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}{WEBHOOK_PATH}"

    async def stop(self) -> None:
        for task in self.tasks:
            await task
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        envelope = await request.json()
        answer: Dict[str, Any] = {}
        if self.reply is not None:
            answer = await self.reply(envelope["type"], envelope["data"])
        return web.json_response(answer)

    def later(self, cid: str, *bodies: Dict[str, Any], pause: float = 0.05) -> None:
        """Post ``bodies`` over REST after the webhook was answered, one by one."""
        self.tasks.append(asyncio.create_task(self._rest(cid, bodies, pause)))

    async def _rest(self, cid: str, bodies: Any, pause: float) -> None:
        base = self.emulator.base_url
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/virtual-agent/oauth2/token",
                auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
                data={"grant_type": "client_credentials", "scope": "client-read"},
            ) as r:
                token = (await r.json())["access_token"]
            for body in bodies:
                await asyncio.sleep(pause)
                async with http.post(
                    f"{base}/virtual-agent/conversations/{cid}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 200, await r.text()


@pytest_asyncio.fixture
async def fake_bot(sparkcentral_emulator: SparkcentralEmulator) -> AsyncIterator[FakeBot]:
    bot = FakeBot(sparkcentral_emulator)
    await bot.start()
    try:
        yield bot
    finally:
        await bot.stop()


def text(value: str) -> Dict[str, Any]:
    return {"sendMessage": {"text": value}}


async def test_a_turn_answered_in_the_webhook_and_over_rest(fake_bot: FakeBot) -> None:
    async def reply(kind: str, data: Dict[str, Any]) -> Dict[str, Any]:
        if kind == "CONVERSATION_STARTED":
            return text(f"Hi {data['contactProfile']['primaryIdentifier']}")
        said = data["message"]["text"]
        if said == "two":  # one now, two more later over REST
            fake_bot.later(data["conversationId"], text("two-b"), text("two-c"))
            return text("two-a")
        return text(f"echo {said}")

    fake_bot.reply = reply
    convo = await BotConversation.start(fake_bot.emulator, name="Ann", settle=0.3)
    assert convo.greeting == ["Hi Ann"]
    assert await convo.say("one") == ["echo one"]
    assert await convo.say("two", messages=3) == ["two-a", "two-b", "two-c"]
    assert convo.texts == ["Hi Ann", "echo one", "two-a", "two-b", "two-c"]
    assert convo.queue == "bot"


async def test_handoff_topics_and_hand_back(fake_bot: FakeBot) -> None:
    async def reply(kind: str, data: Dict[str, Any]) -> Dict[str, Any]:
        if kind == "CONVERSATION_STARTED":
            return {}
        fake_bot.later(
            data["conversationId"],
            {"applyTopics": ["billing"]},
            {**text("Passing you on"), "complete": "HANDOVER"},
        )
        return {}

    fake_bot.reply = reply
    convo = await BotConversation.start(fake_bot.emulator, greeting=False, settle=0.3)
    assert convo.greeting == []
    await convo.say("a human please", messages=1)
    await convo.expect_handoff()
    assert convo.queue == "new" and convo.topics == {"billing"}
    with pytest.raises(TurnError, match="'new' queue"):
        await convo.say("hello?")
    convo.agent_says("Eva here")
    assert await convo.hand_back() == []  # a bot that does not greet: nothing to wait for
    assert convo.queue == "bot"
    assert "agent: Eva here" in convo.transcript


async def test_a_bot_that_says_nothing_fails_the_turn_with_the_transcript(
    fake_bot: FakeBot,
) -> None:
    convo = await BotConversation.start(fake_bot.emulator, greeting=False, timeout=0.5)
    with pytest.raises(TurnError, match="did nothing for an answer to 'anyone'") as caught:
        await convo.say("anyone")
    assert "contact: anyone" in str(caught.value)
    with pytest.raises(TurnError, match="expected a handoff"):
        await convo.expect_handoff(timeout=0.3)


async def test_a_refused_webhook_names_the_status(fake_bot: FakeBot) -> None:
    fake_bot.emulator.webhook_url = fake_bot.emulator.webhook_url.replace(WEBHOOK_PATH, "/nope")
    with pytest.raises(TurnError, match="webhook answered 404"):
        await BotConversation.start(fake_bot.emulator)
