"""The REST client against the emulator (a real HTTP server on loopback)."""

import base64
import logging
import random
from typing import AsyncIterator
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from rasa_sparkcentral.client import Outcome, SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.testing.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SHARED_SECRET,
    SparkcentralEmulator,
)
from rasa_sparkcentral.testing.processes import free_port
from rasa_sparkcentral.testing.receiver import emulator_without_bot

CONVERSATION_PATH = "/virtual-agent/conversations/"


@pytest.fixture
async def emulator() -> AsyncIterator[SparkcentralEmulator]:
    async with emulator_without_bot() as emu:
        yield emu


def make_client(emu: SparkcentralEmulator, **overrides: object) -> SparkcentralClient:
    credentials = {
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "shared_secret": DEFAULT_SHARED_SECRET,
        "base_url": emu.base_url,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "max_attempts": 4,
        "retry_deadline": 5,
        "request_timeout": 2,
    }
    credentials.update(overrides)
    return SparkcentralClient(Settings.from_credentials(credentials), rng=random.Random(7))


async def conversation(emu: SparkcentralEmulator) -> str:
    result = await emu.start_conversation()
    assert result.status == 200
    return str(result.conversation_id)


async def test_token_is_fetched_once_and_sent_as_bearer(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    try:
        for i in range(5):
            assert await client.act(cid, {"sendMessage": {"text": f"m{i}"}}) is Outcome.DELIVERED
    finally:
        await client.close()
    assert emulator.token_requests == 1
    token_calls = emulator.calls_to("/virtual-agent/oauth2/token")
    assert len(token_calls) == 1
    assert token_calls[0].headers["Authorization"].startswith("Basic ")
    assert b"grant_type=client_credentials" in token_calls[0].body
    posts = emulator.calls_to(CONVERSATION_PATH, "POST")
    bearers = {c.headers["Authorization"] for c in posts}
    assert len(posts) == 5 and len(bearers) == 1
    (bearer,) = bearers
    assert bearer.startswith("Bearer ") and len(bearer) > len("Bearer ") + 16
    assert emulator.bot_texts(cid) == [f"m{i}" for i in range(5)]


async def test_expired_token_is_refreshed_once(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    try:
        assert await client.act(cid, {"sendMessage": {"text": "one"}}) is Outcome.DELIVERED
        emulator.faults.expire_tokens()
        assert await client.act(cid, {"sendMessage": {"text": "two"}}) is Outcome.DELIVERED
    finally:
        await client.close()
    assert emulator.token_requests == 2
    statuses = [c.status for c in emulator.calls_to(CONVERSATION_PATH, "POST")]
    assert statuses == [200, 401, 200]
    assert emulator.bot_texts(cid) == ["one", "two"]


async def test_rate_limit_honours_retry_after(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    emulator.faults.rate_limit_next(2, retry_after=0.3)
    try:
        assert await client.act(cid, {"sendMessage": {"text": "hi"}}) is Outcome.DELIVERED
    finally:
        await client.close()
    posts = emulator.calls_to(CONVERSATION_PATH, "POST")
    assert [c.status for c in posts] == [429, 429, 200]
    assert posts[1].at - posts[0].at >= 0.29 and posts[2].at - posts[1].at >= 0.29
    assert emulator.bot_texts(cid) == ["hi"]


async def test_server_errors_are_retried_in_order(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    try:
        emulator.faults.fail_next(2, status=503)
        assert await client.act(cid, {"sendMessage": {"text": "a"}}) is Outcome.DELIVERED
        emulator.faults.fail_next(1, status=500)
        assert await client.act(cid, {"sendMessage": {"text": "b"}}) is Outcome.DELIVERED
    finally:
        await client.close()
    assert emulator.bot_texts(cid) == ["a", "b"]
    assert client.stats.retries == 3


async def test_gives_up_loudly_without_leaking_secrets(
    emulator: SparkcentralEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    emulator.faults.fail_next(10, status=503)
    caplog.set_level(logging.DEBUG)
    try:
        assert await client.act(cid, {"sendMessage": {"text": "lost"}}) is Outcome.FAILED
    finally:
        await client.close()
    assert len(emulator.calls_to(CONVERSATION_PATH, "POST")) == 4
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and cid in errors[0].getMessage()
    everything = caplog.text
    for secret in [DEFAULT_CLIENT_SECRET, DEFAULT_SHARED_SECRET, *emulator_tokens(emulator)]:
        assert secret not in everything


def emulator_tokens(emu: SparkcentralEmulator) -> list:
    tokens = []
    for call in emu.calls_to(CONVERSATION_PATH):
        auth = call.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            tokens.append(auth[len("Bearer ") :])
    assert tokens
    return tokens


async def test_gone_conversation_is_not_retried(
    emulator: SparkcentralEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    caplog.set_level(logging.INFO)
    try:
        assert await client.act(cid, {"complete": "HANDOVER"}) is Outcome.DELIVERED
        assert await client.act(cid, {"sendMessage": {"text": "late"}}) is Outcome.GONE
    finally:
        await client.close()
    assert [c.status for c in emulator.calls_to(CONVERSATION_PATH, "POST")] == [200, 404]
    assert emulator.conversations[cid].queue == "new"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_rejected_body_is_not_retried(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    try:
        outcome = await client.act(cid, {"sendMessage": {"attachment": "never-uploaded.png"}})
    finally:
        await client.close()
    assert outcome is Outcome.FAILED
    assert [c.status for c in emulator.calls_to(CONVERSATION_PATH, "POST")] == [400]


async def test_attachment_upload_then_send(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator)
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    try:
        assert (
            await client.upload_attachment(cid, "logo_1.png", data, "image/png")
            is Outcome.DELIVERED
        )
        assert (
            await client.act(cid, {"sendMessage": {"attachment": "logo_1.png"}})
            is Outcome.DELIVERED
        )
    finally:
        await client.close()
    assert emulator.conversations[cid].attachments["logo_1.png"] == ("image/png", data)


async def test_wrong_api_keys_fail_without_retry(
    emulator: SparkcentralEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    cid = await conversation(emulator)
    client = make_client(emulator, client_secret="wrong-secret-value")
    try:
        assert await client.act(cid, {"sendMessage": {"text": "x"}}) is Outcome.FAILED
    finally:
        await client.close()
    assert len(emulator.calls_to("/virtual-agent/oauth2/token")) == 1
    assert "wrong-secret-value" not in caplog.text
    assert "refused the API keys" in caplog.text


async def test_unreachable_sparkcentral_is_retried_then_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = Settings.from_credentials(
        {
            "client_id": "id",
            "client_secret": "s",
            "shared_secret": DEFAULT_SHARED_SECRET,
            "base_url": f"http://127.0.0.1:{port}",
            "backoff_base": 0.01,
            "max_attempts": 3,
        }
    )
    client = SparkcentralClient(settings)
    try:
        assert await client.act("conv-x", {"sendMessage": {"text": "x"}}) is Outcome.FAILED
    finally:
        await client.close()
    assert client.stats.retries == 2
    assert "conv-x" in caplog.text


@pytest.fixture
async def webhook_sink() -> AsyncIterator[str]:
    """A webhook URL on loopback that accepts everything."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/webhook", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/webhook"
    finally:
        await runner.cleanup()


async def test_token_answer_that_is_not_json_is_retried(emulator: SparkcentralEmulator) -> None:
    cid = await conversation(emulator)
    emulator.faults.token_not_json_next(1)
    client = make_client(emulator)
    try:
        assert await client.act(cid, {"sendMessage": {"text": "hi"}}) is Outcome.DELIVERED
    finally:
        await client.close()
    token_calls = emulator.calls_to("/virtual-agent/oauth2/token")
    assert [(c.status, c.fault) for c in token_calls] == [(200, "token_not_json"), (200, None)]
    assert token_calls[0].body == token_calls[1].body  # the same request, asked again
    assert emulator.bot_texts(cid) == ["hi"]


PLATFORM_CASES = {
    "sparkcentral": (
        {"platform": "sparkcentral"},
        "/virtual-agent/oauth2/token",
        {"grant_type": ["client_credentials"], "scope": ["client-read"]},
        "",
    ),
    "hootsuite": (
        {"platform": "hootsuite", "organization_id": "org-42"},
        "/oauth2/token",
        {"grant_type": ["organization_app"], "organization_id": ["org-42"]},
        "/inbox/v1",
    ),
}


@pytest.mark.parametrize("platform", sorted(PLATFORM_CASES))
async def test_token_request_shape_and_reply_paths_per_platform(
    platform: str, webhook_sink: str
) -> None:
    settings, token_path, form, prefix = PLATFORM_CASES[platform]
    emu = SparkcentralEmulator(
        webhook_url=webhook_sink, platform=platform, organization_id="org-42"
    )
    await emu.start()
    client = make_client(emu, **settings)
    try:
        cid = await conversation(emu)
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
        assert await client.upload_attachment(cid, "a.png", png, "image/png") is Outcome.DELIVERED
        body = {"sendMessage": {"text": "hello", "attachment": "a.png"}}
        assert await client.act(cid, body) is Outcome.DELIVERED
    finally:
        await client.close()
        await emu.stop()
    (token_call,) = emu.calls_to(token_path)
    assert token_call.method == "POST" and token_call.status == 200
    assert parse_qs(token_call.body.decode(), strict_parsing=True) == form
    assert token_call.header("Content-Type") == "application/x-www-form-urlencoded"
    basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    assert token_call.header("Authorization") == f"Basic {basic}"
    assert token_call.header("Accept") == "application/json"
    conversation_path = f"{prefix}/virtual-agent/conversations/{cid}"
    assert [(c.method, c.path, c.status) for c in emu.calls if c is not token_call] == [
        ("PUT", f"{conversation_path}/attachments/a.png", 200),
        ("POST", conversation_path, 200),
    ]
    assert emu.bot_texts(cid) == ["hello"]
