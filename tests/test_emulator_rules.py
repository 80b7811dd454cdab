"""The emulator's published rules, each against a small real aiohttp bot on loopback.

Webhook retries (same idempotencyKey, capped backoff, New queue after the last failure),
the reply and first-question timers, both platforms' token grant, paths and signature
header, the 400s for filenames, sizes and attribute keys, tags, notes and attributes,
``messageId`` on every contact message, and non-compact JSON signed as sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Union
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web

from rasa_sparkcentral.protocol import (
    ATTACHMENT_LIMIT_BYTES,
    HOOTSUITE_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_RETRY_BACKOFF_MAX,
)
from rasa_sparkcentral.signature import decode_secret, verify
from rasa_sparkcentral.testing.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SHARED_SECRET,
    EVENT_CONVERSATION_DELEGATED,
    SparkcentralEmulator,
)
from rasa_sparkcentral.testing.emulator.cli import build_parser, make_emulator

# What the bot does with one delivery: a status, a JSON answer, or ("sleep", seconds).
Move = Union[int, Dict[str, Any], tuple]
Script = Callable[[Dict[str, Any]], Move]


class Bot:
    """A webhook on loopback that checks either signature header and plays a script."""

    def __init__(self) -> None:
        self.key = decode_secret(DEFAULT_SHARED_SECRET)
        self.seen: List[Dict[str, Any]] = []
        self.script: Script = lambda envelope: {}
        self.runner: Optional[web.AppRunner] = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/webhook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        header = request.headers.get(HOOTSUITE_SIGNATURE_HEADER) or request.headers.get(
            SIGNATURE_HEADER
        )
        envelope = json.loads(body) if verify(self.key, body, header) else None
        self.seen.append(
            {"at": time.monotonic(), "body": body, "headers": request.headers, "env": envelope}
        )
        if envelope is None:
            return web.json_response({"error": "bad signature"}, status=401)
        move = self.script(envelope)
        if isinstance(move, tuple):
            await asyncio.sleep(float(move[1]))
            return web.json_response({})
        if isinstance(move, int):
            return web.json_response({"error": "emulated"}, status=move)
        return web.json_response(move)

    def envelopes(self, event_type: Optional[str] = None) -> List[Dict[str, Any]]:
        return [
            s["env"]
            for s in self.seen
            if s["env"] is not None and (event_type is None or s["env"]["type"] == event_type)
        ]


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    b = Bot()
    await b.start()
    try:
        yield b
    finally:
        assert b.runner is not None
        await b.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def emulator(bot: Bot, **options: Any) -> SparkcentralEmulator:
    emu = SparkcentralEmulator(webhook_url=bot.url, **options)
    await emu.start()
    return emu


def inbound_only(move: Move) -> Script:
    """Answer ``{}`` to assignments and ``move`` to contact messages."""
    return lambda env: move if env["type"] == "INBOUND_MESSAGE_RECEIVED" else {}


async def token_for(http: aiohttp.ClientSession, emu: SparkcentralEmulator) -> str:
    form = {"grant_type": "client_credentials", "scope": "client-read"}
    if emu.platform == "hootsuite":
        form = {"grant_type": "organization_app", "organization_id": emu.organization_id}
    async with http.post(
        emu.base_url + emu.token_path,
        auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        data=form,
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def act(
    http: aiohttp.ClientSession, emu: SparkcentralEmulator, cid: str, body: Any, token: str
) -> int:
    async with http.post(
        emu.base_url + emu.conversation_path(cid),
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        await resp.read()
        return resp.status


async def put(
    http: aiohttp.ClientSession,
    emu: SparkcentralEmulator,
    cid: str,
    filename: str,
    data: bytes,
    token: str,
) -> int:
    async with http.put(
        emu.base_url + emu.conversation_path(cid) + f"/attachments/{filename}",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
    ) as resp:
        await resp.read()
        return resp.status


# --------------------------------------------------------------------------- webhook retries


async def test_failing_delivery_is_retried_with_the_same_key_then_handed_over(bot: Bot) -> None:
    emu = await emulator(bot, webhook_retries=3, webhook_retry_backoff_max=0.4)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        bot.script = inbound_only(503)
        result = await emu.contact_says(cid, "hello?")
        tries = bot.seen[1:]
        assert len(tries) == 4  # the delivery and 3 retries
        assert len({t["body"] for t in tries}) == 1  # the same bytes every time
        assert {t["env"]["idempotencyKey"] for t in tries} == {result.idempotency_key}
        assert [a["status"] for a in result.attempts] == [503, 503, 503, 503]
        assert result.status == 503
        # exponential backoff, capped at webhook_retry_backoff_max
        assert emu.sender.retry_delays() == [0.1, 0.2, 0.4]
        gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, [0.1, 0.2, 0.4]))
        conv = emu.conversation(cid)
        assert (conv.queue, conv.handover_reason) == ("new", "webhook_failed")
        assert conv.to_dict()["handoverReason"] == "webhook_failed"
        # the human has it now: the contact's next message does not reach the bot
        assert not (await emu.contact_says(cid, "anyone?")).delivered
    finally:
        await emu.stop()


def test_default_backoff_doubles_up_to_the_published_cap() -> None:
    emu = SparkcentralEmulator()
    assert emu.webhook_retries == 3
    assert emu.webhook_timeout == 10.0
    assert emu.sender.retry_delays() == [0.5, 1.0, WEBHOOK_RETRY_BACKOFF_MAX]


async def test_slow_answer_is_retried_and_a_later_200_keeps_the_bot(bot: Bot) -> None:
    emu = await emulator(bot, webhook_timeout=0.3, webhook_retry_backoff_max=0.1)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        moves: List[Move] = [("sleep", 1.0), 500, {"sendMessage": {"text": "here"}}]
        bot.script = lambda env: moves.pop(0) if env["type"] != "CONVERSATION_STARTED" else {}
        result = await emu.contact_says(cid, "hi")
        statuses = [a["status"] for a in result.attempts]
        assert statuses == [0, 500, 200], (result.attempts, len(bot.seen))
        assert "no answer within 0.3s" in str(result.attempts[0]["error"])
        keys = {e["idempotencyKey"] for e in bot.envelopes("INBOUND_MESSAGE_RECEIVED")}
        assert keys == {result.idempotency_key}
        assert result.applied and emu.bot_texts(cid) == ["here"]
        conv = emu.conversation(cid)
        assert (conv.queue, conv.handover_reason) == ("bot", None)
    finally:
        await emu.stop()


async def test_crafted_deliveries_are_not_retried(bot: Bot) -> None:
    emu = await emulator(bot, webhook_retry_backoff_max=0.1)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        bad = await emu.deliver("INBOUND_MESSAGE_RECEIVED", {"conversationId": cid}, signature="0")
        assert bad.status == 401 and len(bad.attempts) == 1 and len(bot.seen) == 2
        assert emu.conversation(cid).queue == "bot"
    finally:
        await emu.stop()


# --------------------------------------------------------------------------- timers


async def test_unanswered_contact_message_is_handed_over(bot: Bot) -> None:
    emu = await emulator(bot, reply_timeout=0.5)
    try:
        answered = str((await emu.start_conversation()).conversation_id)
        silent = str((await emu.start_conversation()).conversation_id)
        bot.script = lambda env: (
            {"sendMessage": {"text": "sure"}}
            if env["type"] == "INBOUND_MESSAGE_RECEIVED"
            and env["data"]["conversationId"] == answered
            else {}
        )
        await emu.contact_says(answered, "question")
        await emu.contact_says(silent, "question")
        await emu.wait_for_queue(silent, "new", timeout=10)
        assert emu.conversation(silent).handover_reason == "reply_timeout"
        assert "no bot reply within 0.5s" in emu.transcript_text(silent)
        # its timer would have fired before the silent one's: the answer stopped it
        assert emu.conversation(answered).queue == "bot"
        assert emu.conversation(answered).handover_reason is None
    finally:
        await emu.stop()


async def test_delegated_conversation_without_a_first_question_is_handed_back(bot: Bot) -> None:
    emu = await emulator(bot, delegated_question_timeout=0.5)
    try:
        asks = "0-asks"
        bot.script = lambda env: (
            {"sendMessage": {"text": "How can I help?"}}
            if env["data"]["conversationId"] == asks
            else {}
        )
        await emu.start_conversation(asks, event_type=EVENT_CONVERSATION_DELEGATED)
        mute = str(
            (await emu.start_conversation(event_type=EVENT_CONVERSATION_DELEGATED)).conversation_id
        )
        await emu.wait_for_queue(mute, "new", timeout=10)
        assert emu.conversation(mute).handover_reason == "no_question"
        assert emu.conversation(asks).queue == "bot"
        assert emu.bot_texts(asks) == ["How can I help?"]
    finally:
        await emu.stop()


# --------------------------------------------------------------------------- platforms


async def test_hootsuite_token_grant(bot: Bot, http: aiohttp.ClientSession) -> None:
    emu = await emulator(bot, platform="hootsuite", organization_id="org-42")
    try:
        assert emu.token_path == "/oauth2/token"
        url = emu.base_url + emu.token_path
        basic = aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        good = {"grant_type": "organization_app", "organization_id": "org-42"}
        cases: List[Any] = [
            (None, good, 401),  # no Basic header
            (None, {**good, "client_id": DEFAULT_CLIENT_ID, "client_secret": "x"}, 400),
            (basic, {**good, "client_secret": DEFAULT_CLIENT_SECRET}, 400),
            (basic, {"grant_type": "organization_app", "organization_id": "org-1"}, 400),
            (basic, {"grant_type": "organization_app"}, 400),
            (basic, {"grant_type": "client_credentials", "scope": "client-read"}, 400),
            (basic, good, 200),
        ]
        for auth, form, status in cases:
            async with http.post(url, auth=auth, data=form) as resp:
                assert resp.status == status, (form, await resp.text())
        # the classic token path does not exist on Inbox 2.0
        async with http.post(emu.base_url + "/virtual-agent/oauth2/token", auth=basic) as r:
            assert r.status == 404
        assert emu.token_requests == 1
        assert parse_qs(emu.calls[-2].body.decode()) == {
            "grant_type": ["organization_app"],
            "organization_id": ["org-42"],
        }
    finally:
        await emu.stop()


async def test_classic_token_grant_needs_the_scope(bot: Bot, http: aiohttp.ClientSession) -> None:
    emu = await emulator(bot)
    try:
        basic = aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        url = emu.base_url + "/virtual-agent/oauth2/token"
        async with http.post(url, auth=basic, data={"grant_type": "client_credentials"}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_scope"
        form = {"grant_type": "client_credentials", "scope": "client-read"}
        async with http.post(url, auth=basic, data=form) as r:
            assert r.status == 200
    finally:
        await emu.stop()


async def test_hootsuite_paths_signature_and_repeated_fields(
    bot: Bot, http: aiohttp.ClientSession
) -> None:
    emu = await emulator(bot, platform="hootsuite")
    try:
        assert (emu.api_prefix, emu.signature_header) == ("/inbox/v1", HOOTSUITE_SIGNATURE_HEADER)
        cid = str((await emu.start_conversation(language="fr-FR")).conversation_id)
        said = await emu.contact_says(cid, "bonjour")
        for seen in bot.seen:
            assert HOOTSUITE_SIGNATURE_HEADER in seen["headers"]
            assert SIGNATURE_HEADER not in seen["headers"]
            assert seen["env"] is not None  # signed correctly
        started, inbound = bot.envelopes()
        assert started["data"]["language"] == "fr-FR"
        for name in ("channel", "contactProfile", "medium", "language"):
            assert inbound["data"][name] == started["data"][name], name
        assert inbound["data"]["message"]["messageId"] == said.message_id

        token = await token_for(http, emu)
        assert await act(http, emu, cid, {"sendMessage": {"text": "salut"}}, token) == 200
        assert await put(http, emu, cid, "a.png", b"png", token) == 200
        assert [(c.method, c.path) for c in emu.rest_calls] == [
            ("POST", f"/inbox/v1/virtual-agent/conversations/{cid}"),
            ("PUT", f"/inbox/v1/virtual-agent/conversations/{cid}/attachments/a.png"),
        ]
        assert emu.rest_calls[0].conversation_id == cid
        async with http.post(
            f"{emu.base_url}/virtual-agent/conversations/{cid}",
            json={"sendMessage": {"text": "x"}},
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            assert r.status == 404  # the classic path is not Inbox 2.0's
        # the successor fields are known on Inbox 2.0 even with the classic switch off
        emu.accept_extended_fields = False
        assert await act(http, emu, cid, {"sendMessages": [{"text": "a"}]}, token) == 200
        assert emu.bot_texts(cid) == ["salut", "a"]
    finally:
        await emu.stop()


# --------------------------------------------------------------------------- 400s


async def test_filename_size_and_attribute_keys_are_checked(
    bot: Bot, http: aiohttp.ClientSession
) -> None:
    emu = await emulator(bot)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        token = await token_for(http, emu)
        for name in ("with%20space.png", "caf%C3%A9.png", "a+b.png", "x%3By.png"):
            assert await put(http, emu, cid, name, b"png", token) == 400, name
        assert await put(http, emu, cid, "Ok_name-1.v2.png", b"png", token) == 200
        assert await put(http, emu, cid, "big.png", b"x" * ATTACHMENT_LIMIT_BYTES, token) == 400
        just_under = b"x" * (ATTACHMENT_LIMIT_BYTES - 1)
        assert await put(http, emu, cid, "under.png", just_under, token) == 200
        assert set(emu.conversation(cid).attachments) == {"Ok_name-1.v2.png", "under.png"}

        for key in ("plan-tier", "plan tier", "", "plän"):
            body = {"setContactAttributes": {key: "gold"}}
            assert await act(http, emu, cid, body, token) == 400, key
        assert emu.conversation(cid).attributes_set == {}
    finally:
        await emu.stop()


# ------------------------------------------------------------- tags, notes, attributes


async def test_tags_notes_and_attributes(bot: Bot, http: aiohttp.ClientSession) -> None:
    emu = await emulator(bot)
    try:
        cid = str((await emu.start_conversation(language="en-GB")).conversation_id)
        first = await emu.contact_says(cid, "my order")
        bot.script = inbound_only({"applyTags": ["order"], "sendMessage": {"text": "ok"}})
        second = await emu.contact_says(cid, "is late")
        assert second.applied
        conv = emu.conversation(cid)
        # names in a webhook answer tag the latest contact message
        assert conv.tags == [{"messageId": second.message_id, "tag": "order"}]

        token = await token_for(http, emu)
        assert await act(http, emu, cid, {"applyTags": ["late"]}, token) == 400
        unknown = {"applyTags": [{"messageId": "0-nope", "tag": "late"}]}
        assert await act(http, emu, cid, unknown, token) == 400
        tag_first = {"applyTags": [{"messageId": first.message_id, "tag": "late"}]}
        assert await act(http, emu, cid, tag_first, token) == 200
        assert conv.tags[-1] == {"messageId": first.message_id, "tag": "late"}

        assert await act(http, emu, cid, {"applyConversationNotes": ["x"]}, token) == 400
        notes = {"applyConversationNotes": [{"text": "wants a refund"}, {"text": "VIP"}]}
        assert await act(http, emu, cid, notes, token) == 200
        assert conv.notes == ["wants a refund", "VIP"]

        # an attribute that already has a value is not overwritten
        assert await act(http, emu, cid, {"setContactAttributes": {"plan": "gold"}}, token) == 200
        again = {"setContactAttributes": {"plan": "silver", "tier": "2"}}
        assert await act(http, emu, cid, again, token) == 200
        assert conv.attributes_set == {"plan": "gold", "tier": "2"}
        values = {a["attribute"]: a["value"] for a in conv.contact_attributes}
        assert values["plan"] == "gold" and values["tier"] == "2"

        for state in ("START", "STOP"):
            assert await act(http, emu, cid, {"indicateTyping": state}, token) == 200
        shown = conv.to_dict()
        assert shown["tags"] == conv.tags and shown["notes"] == conv.notes
        assert shown["attributesSet"] == {"plan": "gold", "tier": "2"}
        assert shown["typing"] == ["START", "STOP"]
        assert shown["handoverReason"] is None
        assert await act(http, emu, cid, {"complete": "HANDOVER"}, token) == 200
        assert conv.to_dict()["handoverReason"] == "bot"
    finally:
        await emu.stop()


async def test_classic_without_the_switch_ignores_successor_fields(
    bot: Bot, http: aiohttp.ClientSession
) -> None:
    emu = await emulator(bot, accept_extended_fields=False)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        token = await token_for(http, emu)
        body = {"applyConversationNotes": [{"text": "n"}], "applyTags": ["t"]}
        assert await act(http, emu, cid, body, token) == 200
        conv = emu.conversation(cid)
        assert conv.notes == [] and conv.tags == []
        assert sorted(u.name for u in emu.unknown_fields) == ["applyConversationNotes", "applyTags"]
    finally:
        await emu.stop()


# --------------------------------------------------------------------------- inbound messages


async def test_every_contact_message_carries_a_message_id(bot: Bot) -> None:
    emu = await emulator(bot)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        results = [
            await emu.contact_says(cid, "text"),
            await emu.contact_says(cid, None),
            await emu.contact_says(
                cid,
                "Pro",
                payload="/plan_pro",
                trigger={"type": "STORY", "action": "REPLY"},
                topics=["sales"],
            ),
        ]
        messages = [e["data"]["message"] for e in bot.envelopes("INBOUND_MESSAGE_RECEIVED")]
        ids = [m["messageId"] for m in messages]
        assert ids == [r.message_id for r in results] and len(set(ids)) == 3
        assert all(isinstance(i, str) and i for i in ids)
        assert emu.conversation(cid).message_ids == ids
        assert messages[1] == {"messageId": ids[1]}
        last = bot.envelopes("INBOUND_MESSAGE_RECEIVED")[-1]["data"]
        assert last["message"]["payload"] == "/plan_pro"
        assert last["trigger"] == {"type": "STORY", "action": "REPLY"}
        assert last["conversationTopics"] == ["sales"]
    finally:
        await emu.stop()


async def test_non_compact_json_is_signed_as_sent(bot: Bot) -> None:
    emu = await emulator(bot, pretty_json=True)
    try:
        cid = str((await emu.start_conversation()).conversation_id)
        await emu.contact_says(cid, "one")
        await emu.contact_says(cid, "two")
        bodies = [s["body"] for s in bot.seen]
        assert all(s["env"] is not None for s in bot.seen)  # every signature verified
        pretty = [b for b in bodies if b"\n" in b]
        compact = [b for b in bodies if b"\n" not in b]
        assert pretty and compact
        for body in pretty:
            assert body != json.dumps(json.loads(body), separators=(",", ":")).encode()
    finally:
        await emu.stop()


def test_cli_plays_the_platform_asked_for() -> None:
    env = {"SPARKCENTRAL_PLATFORM": "hootsuite", "SPARKCENTRAL_ORGANIZATION_ID": "org-7"}
    args = build_parser(env).parse_args(["serve", "--reply-timeout", "60"])
    emu = make_emulator(args)
    assert (emu.platform, emu.organization_id, emu.reply_timeout) == ("hootsuite", "org-7", 60.0)
    assert emu.token_path == "/oauth2/token"
    classic = make_emulator(build_parser({}).parse_args(["serve"]))
    assert (classic.platform, classic.reply_timeout) == ("sparkcentral", 300.0)


async def test_admin_api_sends_inbound_fields_and_shows_the_new_records(
    bot: Bot, http: aiohttp.ClientSession
) -> None:
    emu = await emulator(bot, platform="hootsuite")
    try:
        base = f"{emu.base_url}/_emulator/conversations"
        async with http.post(base, json={"language": "nl-NL"}) as r:
            cid = (await r.json())["conversationId"]
        bot.script = inbound_only({"applyTags": ["sales"], "indicateTyping": "START"})
        said = {"payload": "/plan_pro", "trigger": {"type": "POST", "action": "MENTION"}}
        async with http.post(f"{base}/{cid}/messages", json={**said, "topics": ["t"]}) as r:
            answer = await r.json()
        assert r.status == 200 and answer["webhook"]["attempts"][0]["status"] == 200
        data = bot.envelopes("INBOUND_MESSAGE_RECEIVED")[-1]["data"]
        assert data["message"] == {"messageId": answer["messageId"], "payload": "/plan_pro"}
        assert (data["trigger"], data["conversationTopics"]) == (said["trigger"], ["t"])
        assert data["language"] == "nl-NL"
        async with http.post(f"{base}/{cid}/messages", json={"topics": "t"}) as r:
            assert r.status == 400
        async with http.get(f"{base}/{cid}") as r:
            shown = await r.json()
        assert shown["tags"] == [{"messageId": answer["messageId"], "tag": "sales"}]
        assert (shown["typing"], shown["notes"], shown["attributesSet"]) == (["START"], [], {})
        assert shown["handoverReason"] is None and shown["language"] == "nl-NL"
    finally:
        await emu.stop()
