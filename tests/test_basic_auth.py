"""The token request's HTTP Basic header, built by hand (aiohttp 3.14 deprecates
``BasicAuth`` and ``auth=``; aiohttp 3.8/3.9 have no ``encode_basic_auth``)."""

from __future__ import annotations

import base64
import logging
from typing import AsyncIterator, List

import pytest
from aiohttp import web

from rasa_sparkcentral.client import AuthError, Outcome, SparkcentralClient, basic_authorization
from rasa_sparkcentral.config import Settings

SHARED_SECRET = "5eca2a1c0ffee0ddba11ad5eed5a1ad0b5e55edf00d5ca1ab1ec0debabe5f00d"


def decode(header: str) -> str:
    scheme, _, value = header.partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(value, validate=True).decode("utf-8")


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("emulator-client", "emulator-secret"), ("id", "s:with:colons"), ("ïd", "sécrét €")],
)
def test_header_carries_id_and_secret(client_id: str, secret: str) -> None:
    assert decode(basic_authorization(client_id, secret)) == f"{client_id}:{secret}"


def test_ascii_header_is_the_classic_encoding() -> None:
    # what aiohttp.BasicAuth("Aladdin", "open sesame").encode() gives (RFC 7617's example)
    assert basic_authorization("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


def test_colon_in_client_id_is_refused() -> None:
    with pytest.raises(AuthError):
        basic_authorization("a:b", "secret")


class TokenEndpoint:
    """A loopback token endpoint that records the Authorization headers it receives."""

    def __init__(self) -> None:
        self.headers: List[str] = []
        self.base_url = ""

    async def token(self, request: web.Request) -> web.Response:
        self.headers.append(request.headers.get("Authorization", ""))
        form = await request.post()
        assert form.get("grant_type") == "client_credentials"
        return web.json_response({"access_token": "t0k3n", "expires_in": 3600})


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    recorder = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/virtual-agent/oauth2/token", recorder.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.base_url = f"http://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def client_for(endpoint: TokenEndpoint, client_id: str, secret: str) -> SparkcentralClient:
    settings = Settings.from_credentials(
        {
            "client_id": client_id,
            "client_secret": secret,
            "shared_secret": SHARED_SECRET,
            "base_url": endpoint.base_url,
            "max_attempts": 1,
        }
    )
    return SparkcentralClient(settings)


async def test_token_request_sends_basic_header(endpoint: TokenEndpoint) -> None:
    client = client_for(endpoint, "my-client", "my-secret")
    try:
        assert await client.get_token() == "t0k3n"
    finally:
        await client.close()
    assert [decode(h) for h in endpoint.headers] == ["my-client:my-secret"]


async def test_unusable_client_id_fails_without_a_request(
    endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = client_for(endpoint, "my:client", "hush-hush-secret")
    try:
        assert await client.act("conv-1", {"sendMessage": {"text": "x"}}) is Outcome.FAILED
    finally:
        await client.close()
    assert endpoint.headers == []
    assert "must not contain ':'" in caplog.text
    assert "hush-hush-secret" not in caplog.text
