"""The Sparkcentral emulator, over real HTTP on loopback (no mocks).

A tiny aiohttp app plays the bot's webhook: it verifies X-Sparkcentral-Signature with
``rasa_sparkcentral.signature`` and answers what each test tells it to.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Union

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from rasa_sparkcentral.protocol import HEALTH_PATH, WEBHOOK_PATH
from rasa_sparkcentral.signature import (
    SIGNATURE_HEADER,
    decode_secret,
    sign,
    sign_with_secret,
    verify,
)
from rasa_sparkcentral.testing.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SHARED_SECRET,
    Conversation,
    EmulatorTimeout,
    FaultPlan,
    RecordedCall,
    SparkcentralEmulator,
    WebhookResult,
    pytest_plugin,
)
from rasa_sparkcentral.testing.emulator.cli import build_parser

# The plugin's fixtures (also registered through the pytest11 entry point once installed).
sparkcentral_emulator = pytest_plugin.sparkcentral_emulator
sparkcentral_emulator_options = pytest_plugin.sparkcentral_emulator_options

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN_PATH = "/virtual-agent/oauth2/token"

Answer = Union[Dict[str, Any], web.StreamResponse, None]
Responder = Callable[[Dict[str, Any]], Awaitable[Answer]]


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    """The bot's webhook: verifies signatures (401 when wrong) and records every delivery."""

    def __init__(self, shared_secret: str = DEFAULT_SHARED_SECRET) -> None:
        self.key = decode_secret(shared_secret)
        self.deliveries: List[Dict[str, Any]] = []
        self.responder: Optional[Responder] = None
        self.runner: Optional[web.AppRunner] = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self.handle)
        app.router.add_get(HEALTH_PATH, self.health)  # as the channel's health check
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        signature = request.headers.get(SIGNATURE_HEADER)
        valid = verify(self.key, body, signature)
        record: Dict[str, Any] = {
            "body": body,
            "headers": dict(request.headers),
            "signature": signature,
            "valid": valid,
            "envelope": None,
        }
        self.deliveries.append(record)
        if not valid:
            return web.json_response({"error": "bad signature"}, status=401)
        envelope = json.loads(body)
        record["envelope"] = envelope
        answer: Answer = {}
        if self.responder is not None:
            answer = await self.responder(envelope)
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer if answer is not None else {})

    def envelopes(self, event_type: Optional[str] = None) -> List[Dict[str, Any]]:
        return [
            d["envelope"]
            for d in self.deliveries
            if d["envelope"] is not None
            and (event_type is None or d["envelope"]["type"] == event_type)
        ]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


@pytest_asyncio.fixture
async def emu(
    sparkcentral_emulator: SparkcentralEmulator, receiver: Receiver
) -> SparkcentralEmulator:
    sparkcentral_emulator.webhook_url = receiver.url
    return sparkcentral_emulator


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_token(
    http: aiohttp.ClientSession,
    emu: SparkcentralEmulator,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
) -> str:
    async with http.post(
        emu.base_url + TOKEN_PATH,
        auth=aiohttp.BasicAuth(client_id, client_secret),
        data={"grant_type": "client_credentials", "scope": "client-read"},
        headers={"Accept": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def act(
    http: aiohttp.ClientSession,
    emu: SparkcentralEmulator,
    conversation_id: str,
    body: Any,
    token: Optional[str],
) -> aiohttp.ClientResponse:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        f"{emu.base_url}/virtual-agent/conversations/{conversation_id}",
        data=data,
        headers={**headers, "Content-Type": "application/json"},
    ) as resp:
        await resp.read()
        return resp


async def upload(
    http: aiohttp.ClientSession,
    emu: SparkcentralEmulator,
    conversation_id: str,
    filename: str,
    data: bytes,
    content_type: Optional[str],
    token: str,
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"}
    skip = []
    if content_type is None:
        skip.append("Content-Type")
    else:
        headers["Content-Type"] = content_type
    async with http.put(
        f"{emu.base_url}/virtual-agent/conversations/{conversation_id}/attachments/{filename}",
        data=data,
        headers=headers,
        skip_auto_headers=skip,
    ) as resp:
        await resp.read()
        return resp


async def started(emu: SparkcentralEmulator, **kwargs: Any) -> str:
    result = await emu.start_conversation(**kwargs)
    assert result.status == 200, result.text
    assert result.conversation_id is not None
    return result.conversation_id


# --------------------------------------------------------------------------- signing


def test_protocol_test_vector() -> None:
    secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    body = (
        b'{"timestamp":"2019-02-20T10:29:10.238188Z","idempotencyKey":'
        b'"5b784e97-34fa-11e9-bf33-f1b7c89708ca","version":1,"type":"INBOUND_MESSAGE_RECEIVED",'
        b'"data":{"conversationId":"0-01e67a8c216-000-8c9ea98e","message":{"text":"Hello"}}}'
    )
    assert len(body) == 227
    digest = "239d4f1960b558f61955ad94dd3c847d80df2fe17b37a9ac7ba67ace75a1106d"
    assert sign_with_secret(secret, body) == digest
    assert SparkcentralEmulator(shared_secret=secret).sign(body) == digest
    # Keying with the ASCII of the hex string is the classic bug: it must differ.
    assert sign(secret.encode("ascii"), body) != digest


def test_default_secret_is_64_hex_chars() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", DEFAULT_SHARED_SECRET)
    with pytest.raises(ValueError):
        SparkcentralEmulator(shared_secret="not hex")


async def test_webhooks_are_signed_compact_envelopes(
    emu: SparkcentralEmulator, receiver: Receiver
) -> None:
    cid = await started(emu, name="Ann", vip=True, language="nl-BE")
    said = await emu.contact_says(cid, "Hello ✓")
    assert [d["valid"] for d in receiver.deliveries] == [True, True]
    for delivery in receiver.deliveries:
        body: bytes = delivery["body"]
        envelope = delivery["envelope"]
        assert list(envelope) == ["timestamp", "idempotencyKey", "version", "type", "data"]
        assert envelope["version"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", envelope["timestamp"])
        uuid.UUID(envelope["idempotencyKey"])
        assert body == json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        assert delivery["headers"]["Content-Type"].startswith("application/json")
        assert delivery["signature"] == sign_with_secret(DEFAULT_SHARED_SECRET, body)
    start_env, message_env = receiver.envelopes()
    assert start_env["type"] == "CONVERSATION_STARTED"
    data = start_env["data"]
    assert data["conversationId"] == cid
    assert re.fullmatch(r"0-[0-9a-f]{11}-000-[0-9a-f]{8}", cid)
    assert data["contactProfile"]["primaryIdentifier"] == "Ann"
    assert data["contactProfile"]["vip"] is True
    assert set(data["contactProfile"]) >= {
        "id",
        "mediumContactProfileId",
        "primaryIdentifier",
        "secondaryIdentifier",
        "pictureUrl",
        "vip",
    }
    assert data["contactAttributes"] == [
        {"attribute": "smooch-rtm-browser-language", "value": "nl-BE", "source": "MEDIUM"}
    ]
    assert data["medium"] == {"id": "smooch-rtm"}
    assert set(data["channel"]) == {"id", "name"}
    assert message_env["type"] == "INBOUND_MESSAGE_RECEIVED"
    assert message_env["data"] == {
        "conversationId": cid,
        "message": {"messageId": said.message_id, "text": "Hello ✓"},
    }
    assert said.message_id
    assert start_env["idempotencyKey"] != message_env["idempotencyKey"]
    assert emu.conversations[cid].queue == "bot"
    assert emu.transcript_text(cid).splitlines()[-1] == "contact: Hello ✓"


async def test_deliver_low_level_options(emu: SparkcentralEmulator, receiver: Receiver) -> None:
    cid = await started(emu)
    bad = await emu.deliver("INBOUND_MESSAGE_RECEIVED", {"conversationId": cid}, signature="0" * 64)
    assert bad.status == 401
    unsigned = await emu.deliver("INBOUND_MESSAGE_RECEIVED", {"conversationId": cid}, sign=False)
    assert unsigned.status == 401
    assert SIGNATURE_HEADER not in receiver.deliveries[-1]["headers"]
    upper = await emu.deliver(
        "SOMETHING_NEW",
        {"conversationId": cid},
        headers={"X-Extra": "1"},
        idempotency_key="fixed-key",
    )
    assert upper.status == 200 and upper.idempotency_key == "fixed-key"
    assert receiver.deliveries[-1]["headers"]["X-Extra"] == "1"
    raw = b'{"not":"an envelope"}'
    raw_result = await emu.deliver("IGNORED", None, raw_body=raw)
    assert raw_result.status == 200 and receiver.deliveries[-1]["body"] == raw
    assert raw_result.body == raw

    sequential = await emu.deliver(
        "INBOUND_MESSAGE_RECEIVED", {"conversationId": cid, "message": {"text": "x"}}, copies=3
    )
    assert len(sequential.results) == 3 and sequential.results[0] is sequential
    bodies = {d["body"] for d in receiver.deliveries[-3:]}
    assert len(bodies) == 1
    keys = {d["envelope"]["idempotencyKey"] for d in receiver.deliveries[-3:]}
    assert keys == {sequential.idempotency_key}
    concurrent = await emu.deliver(
        "INBOUND_MESSAGE_RECEIVED",
        {"conversationId": cid, "message": {"text": "y"}},
        copies=4,
        concurrent=True,
    )
    assert [r.status for r in concurrent.results] == [200] * 4
    assert len({d["body"] for d in receiver.deliveries[-4:]}) == 1
    # The contact wrote each message once, whatever the number of deliveries.
    assert emu.transcript_text(cid).count("contact: x") == 1
    assert len(emu.webhook_deliveries) == len(receiver.deliveries)


# --------------------------------------------------------------------------- token endpoint


async def test_token_endpoint(emu: SparkcentralEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.base_url + TOKEN_PATH
    form = {"grant_type": "client_credentials", "scope": "client-read"}
    async with http.post(
        url, auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET), data=form
    ) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["token_type"] == "bearer"
    assert answer["expires_in"] == 3600
    assert isinstance(answer["access_token"], str) and len(answer["access_token"]) >= 32
    assert emu.token_requests == 1

    async with http.post(url, auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, "wrong"), data=form) as r:
        assert r.status == 401
        assert await r.json() == {"error": "invalid_client"}
    async with http.post(url, data=form) as r:
        assert r.status == 401
    async with http.post(url, headers={"Authorization": "Basic !!!"}, data=form) as r:
        assert r.status == 401
    async with http.post(
        url,
        auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        data={"grant_type": "password"},
    ) as r:
        assert r.status == 400
        assert await r.json() == {"error": "unsupported_grant_type"}
    assert emu.token_requests == 1
    assert [c.status for c in emu.calls] == [200, 401, 401, 401, 400]
    assert emu.calls[0].header("authorization") is not None


async def test_custom_credentials_and_lifetime(http: aiohttp.ClientSession) -> None:
    async with SparkcentralEmulator(
        client_id="id-1", client_secret="s3cr3t", token_lifetime=0.3
    ) as emu:
        token = await get_token(http, emu, "id-1", "s3cr3t")
        cid = "0-01e67a8c216-000-aaaaaaaa"
        emu.webhook_url = "http://127.0.0.1:9/unused"  # no delivery in this test
        emu.conversations[cid] = Conversation(id=cid)
        ok = await act(http, emu, cid, {"sendMessage": {"text": "a"}}, token)
        assert ok.status == 200
        await asyncio.sleep(0.4)
        expired = await act(http, emu, cid, {"sendMessage": {"text": "b"}}, token)
        assert expired.status == 401
        assert expired.headers["WWW-Authenticate"].startswith("Bearer")
        assert emu.bot_texts(cid) == ["a"]


# --------------------------------------------------------------------------- conversations


async def test_bearer_is_required(emu: SparkcentralEmulator, http: aiohttp.ClientSession) -> None:
    cid = await started(emu)
    body = {"sendMessage": {"text": "hi"}}
    assert (await act(http, emu, cid, body, None)).status == 401
    assert (await act(http, emu, cid, body, "bogus")).status == 401
    token = await get_token(http, emu)
    async with http.post(
        f"{emu.base_url}/virtual-agent/conversations/{cid}",
        json=body,
        headers={"Authorization": f"Basic {token}"},
    ) as resp:
        assert resp.status == 401
    assert (await act(http, emu, "0-unknown", body, token)).status == 404
    assert (await act(http, emu, cid, body, token)).status == 200
    assert emu.bot_texts(cid) == ["hi"]
    assert [c.status for c in emu.rest_calls] == [401, 401, 401, 404, 200]
    assert emu.actions_for(cid) == [body]


async def test_handover_and_resolve_give_404(
    emu: SparkcentralEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    token = await get_token(http, emu)
    cid = await started(emu)
    handover = {"sendMessage": {"text": "A colleague will help you"}, "complete": "HANDOVER"}
    assert (await act(http, emu, cid, handover, token)).status == 200
    assert emu.conversations[cid].queue == "new"
    late = await act(http, emu, cid, {"sendMessage": {"text": "too late"}}, token)
    assert late.status == 404
    assert emu.bot_texts(cid) == ["A colleague will help you"]

    # The contact writes to the human agent: the bot is not told.
    before = len(receiver.deliveries)
    result = await emu.contact_says(cid, "are you there?")
    assert result.delivered is False and result.status == 0
    assert len(receiver.deliveries) == before
    emu.agent_says(cid, "Hi, I am Eva")

    back = await emu.hand_back(cid)
    assert back.status == 200
    assert emu.conversations[cid].queue == "bot"
    start_envelopes = receiver.envelopes("CONVERSATION_STARTED")
    assert len(start_envelopes) == 2
    assert start_envelopes[1]["data"] == start_envelopes[0]["data"]
    assert (await act(http, emu, cid, {"sendMessage": {"text": "back"}}, token)).status == 200

    delegated = await emu.hand_back(cid, event_type="CONVERSATION_DELEGATED")
    assert delegated.status == 200
    assert receiver.envelopes()[-1]["type"] == "CONVERSATION_DELEGATED"

    assert (await act(http, emu, cid, {"complete": "RESOLVED"}, token)).status == 200
    assert emu.conversations[cid].queue == "resolved"
    assert (await act(http, emu, cid, {"sendMessage": {"text": "x"}}, token)).status == 404
    text = emu.transcript_text(cid)
    for line in (
        "bot: A colleague will help you",
        "[HANDOVER -> new queue]",
        "contact: are you there?",
        "agent: Hi, I am Eva",
        "bot: back",
    ):
        assert line in text.splitlines()
    assert "RESOLVED" in text.splitlines()[-1]
    assert emu.conversations[cid].assignments == 3


async def test_action_validation(emu: SparkcentralEmulator, http: aiohttp.ClientSession) -> None:
    emu.known_topics = {"billing", "sales"}
    token = await get_token(http, emu)
    cid = await started(emu)
    invalid: List[Any] = [
        b"not json",
        [1, 2],
        {"sendMessage": "hi"},
        {"sendMessage": {"text": 5}},
        {"sendMessage": {}},
        {"applyTopics": "billing"},
        {"applyTopics": [1]},
        {"complete": "DONE"},
        {"indicateTyping": "MAYBE"},
        {"sendMessages": [{"text": "ok"}, "bad"]},
    ]
    for body in invalid:
        resp = await act(http, emu, cid, body, token)
        assert resp.status == 400, body
    assert emu.actions_for(cid) == []
    assert emu.conversations[cid].queue == "bot"

    ok = {
        "sendMessage": {"text": "one"},
        "applyTopics": ["billing", "does-not-exist"],
        "complete": None,
        "futureField": {"x": 1},
    }
    assert (await act(http, emu, cid, ok, token)).status == 200
    assert emu.conversations[cid].topics == {"billing"}
    assert emu.conversations[cid].ignored_topics == ["does-not-exist"]
    assert [(u.name, u.value) for u in emu.unknown_fields] == [("futureField", {"x": 1})]
    nulls = {"sendMessage": None, "applyTopics": None, "complete": None}
    assert (await act(http, emu, cid, nulls, token)).status == 200
    extended = {
        "sendMessages": [{"text": "two"}, {"text": "three"}],
        "setContactAttributes": {"plan": "gold"},
        "indicateTyping": "START",
    }
    assert (await act(http, emu, cid, extended, token)).status == 200
    conv = emu.conversations[cid]
    assert emu.bot_texts(cid) == ["one", "two", "three"]
    assert {"attribute": "plan", "value": "gold", "source": "VIRTUAL_AGENT"} in (
        conv.contact_attributes
    )
    assert conv.typing == ["START"]
    assert "[topics: billing] (ignored unknown: does-not-exist)" in emu.transcript_text(cid)


async def test_classic_mode_treats_extended_fields_as_unknown(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with SparkcentralEmulator(webhook_url=receiver.url, accept_extended_fields=False) as emu:
        token = await get_token(http, emu)
        cid = await started(emu)
        body = {"sendMessage": {"text": "a"}, "sendMessages": [{"text": "b"}]}
        assert (await act(http, emu, cid, body, token)).status == 200
        assert emu.bot_texts(cid) == ["a"]
        assert [u.name for u in emu.unknown_fields] == ["sendMessages"]


async def test_attachments(emu: SparkcentralEmulator, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, emu)
    cid = await started(emu)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    missing = await act(http, emu, cid, {"sendMessage": {"attachment": "cat.png"}}, token)
    assert missing.status == 400
    assert emu.actions_for(cid) == []

    assert (await upload(http, emu, cid, "cat.png", png, None, token)).status == 400
    assert (await upload(http, emu, cid, "cat.png", b"", "image/png", token)).status == 400
    assert (await upload(http, emu, "0-nope", "cat.png", png, "image/png", token)).status == 404
    no_token = await upload(http, emu, cid, "cat.png", png, "image/png", "bogus")
    assert no_token.status == 401
    assert (await upload(http, emu, cid, "cat.png", png, "image/png", token)).status == 200
    assert emu.conversations[cid].attachments["cat.png"] == ("image/png", png)

    body = {"sendMessage": {"text": "Look", "attachment": "cat.png"}}
    assert (await act(http, emu, cid, body, token)).status == 200
    entry = emu.conversations[cid].transcript[-1]
    assert (entry.sender, entry.text, entry.attachment, entry.via) == (
        "bot",
        "Look",
        "cat.png",
        "rest",
    )
    assert entry.render() == "bot: Look [attachment cat.png image/png]"
    other = await started(emu)
    # Uploads belong to one conversation.
    wrong = await act(http, emu, other, {"sendMessage": {"attachment": "cat.png"}}, token)
    assert wrong.status == 400
    put = emu.calls_to(f"/virtual-agent/conversations/{cid}/attachments/", "PUT")[-1]
    assert put.body == png and put.status == 200


# --------------------------------------------------------------------------- faults


async def test_rate_limit_and_failures(
    emu: SparkcentralEmulator, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, emu)
    cid = await started(emu)
    emu.faults.rate_limit_next(1, retry_after=2).fail_next(2, status=502)
    assert emu.faults.pending_rest == 3
    url = f"{emu.base_url}/virtual-agent/conversations/{cid}"
    headers = {"Authorization": f"Bearer {token}"}
    statuses = []
    for i in range(4):
        async with http.post(url, json={"sendMessage": {"text": f"m{i}"}}, headers=headers) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert r.headers["Retry-After"] == "2"
    assert statuses == [429, 502, 502, 200]
    assert emu.bot_texts(cid) == ["m3"]  # faulted requests are not applied
    faulted = [c for c in emu.rest_calls if c.fault]
    assert [(c.status, c.fault) for c in faulted] == [
        (429, "rate_limit"),
        (502, "fail"),
        (502, "fail"),
    ]
    assert faulted[0].json == {"sendMessage": {"text": "m0"}}

    emu.faults.token_fail_next(1, status=500)
    async with http.post(
        emu.base_url + TOKEN_PATH,
        auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        data={"grant_type": "client_credentials"},
    ) as r:
        assert r.status == 500
    assert emu.token_requests == 1
    await get_token(http, emu)
    assert emu.token_requests == 2


async def test_expire_tokens_and_delay(
    emu: SparkcentralEmulator, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, emu)
    cid = await started(emu)
    emu.faults.expire_tokens()
    assert (await act(http, emu, cid, {"sendMessage": {"text": "a"}}, token)).status == 401
    fresh = await get_token(http, emu)
    assert (await act(http, emu, cid, {"sendMessage": {"text": "a"}}, fresh)).status == 200
    assert (await act(http, emu, cid, {"sendMessage": {"text": "b"}}, token)).status == 401

    emu.faults.delay = 0.2
    begin = time.perf_counter()
    assert (await act(http, emu, cid, {"sendMessage": {"text": "c"}}, fresh)).status == 200
    assert time.perf_counter() - begin >= 0.19
    assert emu.bot_texts(cid) == ["a", "c"]


async def test_fail_rate_is_reproducible() -> None:
    def draw(seed: int) -> List[Optional[int]]:
        plan = FaultPlan(fail_rate=0.5, seed=seed)
        out = []
        for _ in range(40):
            fault = plan.take_rest_fault()
            out.append(None if fault is None else fault.status)
        return out

    first = draw(7)
    assert first == draw(7)
    assert 5 < first.count(503) < 35
    plan = FaultPlan().apply_dict(
        {"failNext": {"count": 2, "status": 500}, "rate_limit_next": 1, "delay": 0.5}
    )
    assert plan.delay == 0.5 and plan.pending_rest == 3
    with pytest.raises(ValueError):
        plan.apply_dict({"bogus": 1})
    plan.reset()
    assert plan.pending_rest == 0 and plan.delay == 0


# --------------------------------------------------------------------------- webhook answers


async def test_webhook_answer_is_applied(emu: SparkcentralEmulator, receiver: Receiver) -> None:
    async def respond(envelope: Dict[str, Any]) -> Answer:
        if envelope["type"] == "INBOUND_MESSAGE_RECEIVED":
            return {"sendMessage": {"text": "hi"}, "complete": "HANDOVER"}
        return {}

    receiver.responder = respond
    cid = await started(emu)
    assert emu.actions_for(cid) == []  # an empty {} answer is no action
    result = await emu.contact_says(cid, "I want a human")
    assert result.status == 200 and result.applied and result.error is None
    assert result.json == {"sendMessage": {"text": "hi"}, "complete": "HANDOVER"}
    assert emu.bot_texts(cid) == ["hi"]
    assert emu.webhook_answers_for(cid) == [result.json]
    assert emu.actions_for(cid) == [result.json]
    assert emu.conversations[cid].queue == "new"
    assert emu.conversations[cid].transcript[-2].via == "webhook"
    assert emu.transcript_text(cid).splitlines()[-3:] == [
        "contact: I want a human",
        "bot: hi",
        "[HANDOVER -> new queue]",
    ]
    assert emu.webhook_answer_errors == []


async def test_invalid_webhook_answers_are_not_applied(
    emu: SparkcentralEmulator, receiver: Receiver
) -> None:
    answers: List[Any] = [
        {"sendMessage": {"attachment": "never-uploaded.png"}},
        web.Response(text="OK"),
        web.Response(status=500, text="boom"),
    ]

    async def respond(envelope: Dict[str, Any]) -> Answer:
        if envelope["type"] == "CONVERSATION_STARTED":
            return {}
        answer: Answer = answers.pop(0)
        return answer

    receiver.responder = respond
    cid = await started(emu)
    first = await emu.contact_says(cid, "1")
    assert not first.applied and first.error and "never-uploaded.png" in first.error
    second = await emu.contact_says(cid, "2")
    assert not second.applied and second.error == "webhook answer is not JSON"
    third = await emu.contact_says(cid, "3")
    assert third.status == 500 and not third.applied and third.error is None
    assert emu.actions_for(cid) == []
    assert len(emu.webhook_answer_errors) == 2


async def test_wait_for_bot_messages(
    emu: SparkcentralEmulator, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, emu)
    tasks = []

    async def reply_later(cid: str, texts: List[str]) -> None:
        for text in texts:
            await asyncio.sleep(0.05)
            await act(http, emu, cid, {"sendMessage": {"text": text}}, token)

    async def respond(envelope: Dict[str, Any]) -> Answer:
        if envelope["type"] == "INBOUND_MESSAGE_RECEIVED":
            cid = envelope["data"]["conversationId"]
            tasks.append(asyncio.ensure_future(reply_later(cid, ["one", "two"])))
        return {}

    receiver.responder = respond
    cid = await started(emu)
    await emu.contact_says(cid, "go")
    assert await emu.wait_for_bot_messages(cid, 2, timeout=5) == ["one", "two"]
    await asyncio.gather(*tasks)

    with pytest.raises(EmulatorTimeout) as info:
        await emu.wait_for_bot_messages(cid, 3, timeout=0.2)
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, asyncio.TimeoutError)
    assert "bot: two" in str(info.value) and "contact: go" in str(info.value)

    await emu.wait_for(lambda: len(emu.rest_calls) >= 2, timeout=1)
    await emu.wait_for_queue(cid, "bot", timeout=1)


# --------------------------------------------------------------------------- admin endpoints


async def test_admin_endpoints(
    emu: SparkcentralEmulator, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async def respond(envelope: Dict[str, Any]) -> Answer:
        if envelope["type"] == "INBOUND_MESSAGE_RECEIVED":
            text = envelope["data"]["message"]["text"]
            if text == "human":
                return {"complete": "HANDOVER"}
            return {"sendMessage": {"text": f"echo: {text}"}}
        return {"sendMessage": {"text": "Welcome"}}

    receiver.responder = respond
    base = emu.base_url + "/_emulator"
    async with http.post(
        f"{base}/conversations",
        json={"conversationId": "0-admin", "contactProfile": {"primaryIdentifier": "Zoe"}},
    ) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["conversationId"] == "0-admin"
    assert answer["webhook"]["status"] == 200
    assert answer["webhook"]["body"] == {"sendMessage": {"text": "Welcome"}}
    assert receiver.envelopes()[0]["data"]["contactProfile"] == {"primaryIdentifier": "Zoe"}

    async with http.post(f"{base}/conversations/0-admin/messages", json={"text": "hey"}) as r:
        assert r.status == 200
        assert (await r.json())["webhook"]["body"] == {"sendMessage": {"text": "echo: hey"}}
    async with http.post(f"{base}/conversations/0-admin/messages", json={"text": "human"}) as r:
        assert (await r.json())["webhook"]["applied"] is True
    async with http.post(f"{base}/conversations/0-admin/agent", json={"text": "Eva here"}) as r:
        assert r.status == 200
    async with http.post(f"{base}/conversations/0-admin/handback", json={}) as r:
        assert r.status == 200
    async with http.get(f"{base}/conversations/0-admin") as r:
        conv = await r.json()
    assert conv["queue"] == "bot"
    assert conv["botTexts"] == ["Welcome", "echo: hey", "Welcome"]
    lines = [entry["line"] for entry in conv["transcript"]]
    assert "agent: Eva here" in lines and "[HANDOVER -> new queue]" in lines
    assert [a["via"] for a in conv["actions"]] == ["webhook"] * 4
    async with http.get(f"{base}/conversations/0-missing") as r:
        assert r.status == 404
    async with http.post(f"{base}/conversations/0-admin/agent", json={}) as r:
        assert r.status == 400
    async with http.get(f"{base}/conversations") as r:
        listed = (await r.json())["conversations"]
    assert [c["conversationId"] for c in listed] == ["0-admin"]

    async with http.post(f"{base}/faults", json={"failNext": 1, "delay": 0}) as r:
        assert (await r.json())["pendingRest"][0]["count"] == 1
    async with http.post(f"{base}/faults", json={"nonsense": True}) as r:
        assert r.status == 400
    token = await get_token(http, emu)
    assert (await act(http, emu, "0-admin", {"sendMessage": {"text": "x"}}, token)).status == 503

    async with http.get(f"{base}/calls?limit=1") as r:
        calls = (await r.json())["calls"]
    assert len(calls) == 1 and calls[0]["status"] == 503 and calls[0]["fault"] == "fail"
    assert calls[0]["json"] == {"sendMessage": {"text": "x"}}
    async with http.get(f"{base}/stats") as r:
        stats = await r.json()
    assert stats["tokenRequests"] == 1
    assert stats["queues"] == {"bot": 1, "new": 0, "resolved": 0}
    assert stats["webhookDeliveries"] == 4
    assert stats["callsByStatus"] == {"200": 1, "503": 1}
    # admin requests are not recorded as calls
    assert all(not c.path.startswith("/_emulator/") for c in emu.calls)

    async with http.post(f"{base}/config", json={"webhookUrl": "http://127.0.0.1:9/x"}) as r:
        assert (await r.json())["webhookUrl"] == "http://127.0.0.1:9/x"
    async with http.post(f"{base}/conversations", json={}) as r:
        assert r.status == 502
    async with http.post(f"{base}/reset") as r:
        assert r.status == 200
    assert emu.conversations == {} and emu.calls == []


async def test_config_tells_the_platform_and_its_rules(http: aiohttp.ClientSession) -> None:
    """GET /_emulator/config: what POST may change, and (read-only) what the emulator plays."""
    classic = SparkcentralEmulator(accept_extended_fields=False, reply_timeout=42.0)
    inbox2 = SparkcentralEmulator(platform="hootsuite", organization_id="org-9")
    for emulator in (classic, inbox2):
        await emulator.start()
    try:
        async with http.get(f"{classic.base_url}/_emulator/config") as r:
            assert r.status == 200
            seen = await r.json()
        assert seen == {
            "webhookUrl": classic.webhook_url,
            "tokenLifetime": 3600.0,
            "knownTopics": None,
            "platform": "sparkcentral",
            "organizationId": "emulator-org",
            "successorFields": False,
            "webhookTimeout": 10.0,
            "webhookRetries": 3,
            "webhookRetryBackoffMax": 2.0,
            "replyTimeout": 42.0,
            "delegatedQuestionTimeout": 120.0,
        }
        async with http.get(f"{inbox2.base_url}/_emulator/config") as r:
            seen = await r.json()
        assert (seen["platform"], seen["organizationId"], seen["successorFields"]) == (
            "hootsuite",
            "org-9",
            True,
        )
        # POST answers the same view; the platform is not something it changes
        body = {"knownTopics": ["billing"], "platform": "hootsuite"}
        async with http.post(f"{classic.base_url}/_emulator/config", json=body) as r:
            changed = await r.json()
        assert (changed["knownTopics"], changed["platform"]) == (["billing"], "sparkcentral")
        assert classic.platform == "sparkcentral"
    finally:
        for emulator in (classic, inbox2):
            await emulator.stop()


# --------------------------------------------------------------------------- records


async def test_recorded_calls(emu: SparkcentralEmulator, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, emu)
    cid = await started(emu)
    await act(http, emu, cid, {"sendMessage": {"text": "hi"}}, token)
    async with http.get(emu.base_url + "/nowhere") as r:
        assert r.status == 404
    token_call, action_call, unknown = emu.calls
    assert isinstance(action_call, RecordedCall)
    assert (token_call.method, token_call.path, token_call.status) == ("POST", TOKEN_PATH, 200)
    assert token_call.json is None and b"grant_type=client_credentials" in token_call.body
    assert action_call.json == {"sendMessage": {"text": "hi"}}
    assert action_call.header("AUTHORIZATION") == f"Bearer {token}"
    assert action_call.conversation_id == cid
    assert action_call.response_json == {}
    assert token_call.at <= action_call.at <= time.monotonic()
    assert (unknown.path, unknown.status) == ("/nowhere", 404)
    stats = emu.stats()
    assert stats["botMessages"] == 1 and stats["calls"] == 3


async def test_max_calls_bounds_records(http: aiohttp.ClientSession) -> None:
    async with SparkcentralEmulator(max_calls=10) as emu:
        for _ in range(50):
            async with http.get(emu.base_url + "/nowhere") as r:
                await r.read()
        assert 10 <= len(emu.calls) <= 11


async def test_listener_and_plain_fixture(sparkcentral_emulator: SparkcentralEmulator) -> None:
    assert sparkcentral_emulator.base_url.startswith("http://127.0.0.1:")
    events: List[str] = []
    sparkcentral_emulator.add_listener(lambda e: events.append(e.kind))
    sparkcentral_emulator.conversations.clear()
    sparkcentral_emulator.webhook_url = "http://127.0.0.1:9/unreachable"
    with pytest.raises(aiohttp.ClientError):
        await sparkcentral_emulator.start_conversation("0-x")
    # the assignment is recorded even though the bot could not be reached
    assert sparkcentral_emulator.conversations["0-x"].queue == "bot"
    assert events == ["transcript"]


async def test_webhook_result_type(emu: SparkcentralEmulator) -> None:
    result = await emu.start_conversation()
    assert isinstance(result, WebhookResult)
    assert result.ok and result.elapsed >= 0 and result.results == [result]
    assert result.text == "{}" and result.json == {}


# --------------------------------------------------------------------------- CLI


def cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_cli_parser_defaults_and_env() -> None:
    args = build_parser({"SPARKCENTRAL_SHARED_SECRET": "ab" * 32}).parse_args(["serve"])
    assert args.shared_secret == "ab" * 32
    assert (args.host, args.port) == ("127.0.0.1", 8900)
    assert args.client_id == DEFAULT_CLIENT_ID
    chat = build_parser({}).parse_args(["chat", "--name", "Ann", "--vip", "--port", "0"])
    assert (chat.name, chat.vip, chat.port) == ("Ann", True, 0)


async def read_until(
    stream: asyncio.StreamReader, needle: str, seen: List[str], timeout: float = 20.0
) -> None:
    async def run() -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"EOF before {needle!r}; output so far:\n" + "".join(seen))
            line = raw.decode()
            seen.append(line)
            if needle in line:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no {needle!r} in output:\n" + "".join(seen)) from None


async def test_cli_chat(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    picture = b"GIF89a" + b"\x00" * 10

    async def respond(envelope: Dict[str, Any]) -> Answer:
        data = envelope["data"]
        cid = data["conversationId"]
        if envelope["type"] == "CONVERSATION_STARTED":
            name = data["contactProfile"]["primaryIdentifier"]
            vip = " (VIP)" if data["contactProfile"]["vip"] else ""
            return {"sendMessage": {"text": f"Welcome {name}{vip}"}}
        text = data["message"]["text"]
        if text == "human":
            return {"sendMessage": {"text": "Transferring"}, "complete": "HANDOVER"}
        if text == "picture":
            # An asynchronous reply over REST, as the real connector does.
            async with http.post(
                base + TOKEN_PATH,
                auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
                data={"grant_type": "client_credentials", "scope": "client-read"},
            ) as r:
                token = (await r.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.put(
                f"{base}/virtual-agent/conversations/{cid}/attachments/cat.gif",
                data=picture,
                headers={**auth, "Content-Type": "image/gif"},
            ) as r:
                assert r.status == 200
            async with http.post(
                f"{base}/virtual-agent/conversations/{cid}",
                json={"sendMessage": {"attachment": "cat.gif"}, "applyTopics": ["pets"]},
                headers=auth,
            ) as r:
                assert r.status == 200
            return {}
        return {"sendMessage": {"text": f"echo: {text}"}}

    receiver.responder = respond
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rasa_sparkcentral.testing.emulator",
        "chat",
        "--port",
        str(port),
        "--webhook-url",
        receiver.url,
        "--name",
        "Ann",
        "--vip",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(REPO_ROOT),
        env=cli_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen: List[str] = []

    async def send(line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write((line + "\n").encode())
        await proc.stdin.drain()

    try:
        await read_until(proc.stdout, "/handback", seen)  # the help line
        await read_until(proc.stdout, "bot: Welcome Ann (VIP)", seen)
        await send("hello there")
        await read_until(proc.stdout, "bot: echo: hello there", seen)
        await send("picture")
        await read_until(proc.stdout, "bot: [attachment: cat.gif (image/gif, 16 bytes)]", seen)
        await read_until(proc.stdout, "[topics: pets]", seen)
        await send("human")
        await read_until(proc.stdout, "[HANDOVER -> new queue]", seen)
        await send("anyone?")
        await read_until(proc.stdout, "the bot is not notified", seen)
        await send("/agent Hi Ann, Eva here")
        await read_until(proc.stdout, "agent: Hi Ann, Eva here", seen)
        await send("/handback")
        await read_until(proc.stdout, "bot: Welcome Ann (VIP)", seen)
        await send("/transcript")
        await read_until(proc.stdout, "contact: anyone?", seen)
        await send("/new")
        await read_until(proc.stdout, "bot: Welcome Ann (VIP)", seen)
        proc.stdin.close()  # EOF ends the chat cleanly
        await read_until(proc.stdout, "bye", seen)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    starts = receiver.envelopes("CONVERSATION_STARTED")
    assert len(starts) == 3
    assert starts[0]["data"]["conversationId"] == starts[1]["data"]["conversationId"]
    assert starts[2]["data"]["conversationId"] != starts[0]["data"]["conversationId"]
    assert all(d["valid"] for d in receiver.deliveries)
    assert [
        e["data"]["message"]["text"] for e in receiver.envelopes("INBOUND_MESSAGE_RECEIVED")
    ] == [
        "hello there",
        "picture",
        "human",
    ]


async def test_cli_chat_quit_and_unreachable_bot() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rasa_sparkcentral.testing.emulator",
        "chat",
        "--port",
        "0",
        "--webhook-url",
        f"http://127.0.0.1:{free_port()}/webhook",
        "--wait-for-bot",
        "1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(REPO_ROOT),
        env=cli_env(),
    )
    out, _ = await asyncio.wait_for(proc.communicate(b"hi\n/quit\n"), 20)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "could not reach the bot" in text
    assert text.rstrip().endswith("bye")


def chat_process_args(port: int, webhook_url: str, *extra: str) -> List[str]:
    return [
        sys.executable,
        "-m",
        "rasa_sparkcentral.testing.emulator",
        "chat",
        "--port",
        str(port),
        "--webhook-url",
        webhook_url,
        *extra,
    ]


async def test_cli_chat_waits_for_the_bot_before_the_first_conversation() -> None:
    bot_port = free_port()
    bot = Receiver()

    async def greet(envelope: Dict[str, Any]) -> Answer:
        profile = envelope["data"]["contactProfile"]
        vip = " (VIP)" if profile["vip"] else ""
        return {"sendMessage": {"text": f"Welcome {profile['primaryIdentifier']}{vip}"}}

    bot.responder = greet
    proc = await asyncio.create_subprocess_exec(
        *chat_process_args(
            0,
            f"http://127.0.0.1:{bot_port}{WEBHOOK_PATH}",
            "--name",
            "Ann",
            "--vip",
            "--wait-for-bot",
            "60",
        ),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(REPO_ROOT),
        env=cli_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen: List[str] = []
    try:
        await read_until(
            proc.stdout, f"waiting for the bot at http://127.0.0.1:{bot_port}{HEALTH_PATH}", seen
        )
        await bot.start(bot_port)  # `rasa run` comes up after the chat started
        await read_until(proc.stdout, "the bot is up", seen)
        await read_until(proc.stdout, "bot: Welcome Ann (VIP)", seen)
        proc.stdin.close()
        await read_until(proc.stdout, "bye", seen)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bot.stop()
    starts = bot.envelopes("CONVERSATION_STARTED")
    assert len(starts) == 1
    assert starts[0]["data"]["contactProfile"]["primaryIdentifier"] == "Ann"
    assert "could not reach the bot" not in "".join(seen)


async def test_cli_chat_names_a_bot_without_the_channel() -> None:
    app = web.Application()  # a server that runs, with no Sparkcentral channel in it
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            *chat_process_args(0, f"http://127.0.0.1:{port}{WEBHOOK_PATH}", "--wait-for-bot", "1"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(REPO_ROOT),
            env=cli_env(),
        )
        out, _ = await asyncio.wait_for(proc.communicate(b"/quit\n"), 30)
    finally:
        await runner.cleanup()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "is not up after 1 s: it answered 404: is rasa_sparkcentral.SparkcentralInput" in text
    assert "(webhook answered 404" in text  # then the start is tried anyway


async def test_cli_chat_hides_a_normal_token_refresh(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    async def token(secret: str = DEFAULT_CLIENT_SECRET) -> Optional[str]:
        async with http.post(
            base + TOKEN_PATH,
            auth=aiohttp.BasicAuth(DEFAULT_CLIENT_ID, secret),
            data={"grant_type": "client_credentials", "scope": "client-read"},
        ) as r:
            return str((await r.json())["access_token"]) if r.status == 200 else None

    async def send(cid: str, text: str, bearer: Optional[str]) -> int:
        async with http.post(
            f"{base}/virtual-agent/conversations/{cid}",
            json={"sendMessage": {"text": text}},
            headers={"Authorization": f"Bearer {bearer}"},
        ) as r:
            return r.status

    async def respond(envelope: Dict[str, Any]) -> Answer:
        if envelope["type"] != "INBOUND_MESSAGE_RECEIVED":
            return {}
        cid = envelope["data"]["conversationId"]
        text = envelope["data"]["message"]["text"]
        if text == "refresh":  # the token expires between two replies: a normal refresh
            first = await token()
            assert await send(cid, "before expiry", first) == 200
            async with http.post(f"{base}/_emulator/faults", json={"expireTokens": True}) as r:
                assert r.status == 200
            assert await send(cid, "never shown", first) == 401
            assert await send(cid, "after refresh", await token()) == 200
        else:  # refused: wrong API keys, a token Sparkcentral never issued
            assert await token("wrong-secret") is None
            assert await send(cid, "never shown", "made-up") == 401
            assert await send(cid, "after refusals", await token()) == 200
        return {}

    receiver.responder = respond
    proc = await asyncio.create_subprocess_exec(
        *chat_process_args(port, receiver.url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(REPO_ROOT),
        env=cli_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    out, _ = await asyncio.wait_for(proc.communicate(b"refresh\nrefused\n/quit\n"), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    normal, _, refused = text.partition("bot: after refresh")
    assert "bot: before expiry" in normal and refused, text
    assert "401" not in normal, text
    assert "after refusals" in refused, text
    assert f"(POST {TOKEN_PATH} -> 401" in refused, text
    assert "-> 401 {'error': 'invalid_token', 'message': 'unknown access token'}" in refused, text


async def test_cli_serve(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rasa_sparkcentral.testing.emulator",
        "serve",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=str(REPO_ROOT),
        env={**cli_env(), "SPARKCENTRAL_WEBHOOK_URL": receiver.url},
    )
    assert proc.stdout is not None
    seen: List[str] = []
    try:
        await read_until(proc.stdout, "Ctrl-C", seen)
        async with http.post(
            f"http://127.0.0.1:{port}/_emulator/conversations", json={"conversationId": "0-c"}
        ) as r:
            assert r.status == 200
        await read_until(proc.stdout, "CONVERSATION_STARTED 0-c: 200", seen)
        proc.send_signal(signal.SIGINT)
        await read_until(proc.stdout, "emulator stopped", seen)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert receiver.deliveries and receiver.deliveries[0]["valid"]
