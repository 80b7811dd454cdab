"""Sparkcentral's Virtual Agent REST API: OAuth2 client credentials and conversation calls.

One ``aiohttp.ClientSession`` per client (created lazily inside the running loop),
one cached token per client, bounded retries with exponential backoff and jitter.
Nothing here logs a secret: not the client secret, not a token, not a header.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import quote

import aiohttp

from rasa_sparkcentral.config import Settings

logger = logging.getLogger(__name__)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    #: 404: the conversation is not (or no longer) assigned to this virtual agent.
    GONE = "gone"
    #: Rejected (4xx) or still failing after every retry: logged loudly.
    FAILED = "failed"


class AuthError(Exception):
    """Sparkcentral refused the API keys (the token endpoint answered 400/401/403)."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Attempt:
    """One try of a call: ``outcome`` None means retryable (after ``retry_after``, if
    the platform said so)."""

    outcome: Optional[Outcome]
    reason: str = ""
    retry_after: Optional[float] = None


@dataclass
class ClientStats:
    token_requests: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0


class SparkcentralClient:
    """Calls Sparkcentral on behalf of the bot. Safe to share across conversations."""

    def __init__(self, settings: Settings, *, rng: Optional[random.Random] = None) -> None:
        self._settings = settings
        self._session: Optional[aiohttp.ClientSession] = None
        self._token: Optional[str] = None
        self._token_expires_at = 0.0
        self._token_lock: Optional[asyncio.Lock] = None
        self._rng = rng or random.Random()
        self.stats = ClientStats()

    # -- session and token ------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # keep idle connections for a minute (aiohttp's default is 15 s): a bot that
            # is quiet for a few seconds should not pay for new TLS handshakes
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_connections,
                keepalive_timeout=60.0,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout),
                headers={"User-Agent": "rasa-sparkcentral"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _token_valid(self) -> bool:
        return self._token is not None and time.monotonic() < self._token_expires_at

    def invalidate_token(self, token: Optional[str] = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given)."""
        if token is None or token == self._token:
            self._token = None
            self._token_expires_at = 0.0

    async def get_token(self) -> str:
        """The cached access token, fetching a new one when it is missing or about to expire."""
        if self._token_valid():
            assert self._token is not None
            return self._token
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:
            if self._token_valid():
                assert self._token is not None
                return self._token
            token, lifetime = await self._request_token()
            # renew shortly before expiry: 10% of the lifetime, at most a minute
            margin = min(60.0, lifetime * 0.1)
            self._token = token
            self._token_expires_at = time.monotonic() + max(lifetime - margin, 1.0)
            return token

    async def _request_token(self) -> Tuple[str, float]:
        settings = self._settings
        if not settings.client_id or not settings.client_secret:
            raise AuthError("no API keys configured (client_id / client_secret)")
        authorization = basic_authorization(settings.client_id, settings.client_secret)
        session = self._get_session()
        self.stats.token_requests += 1
        self.stats.requests += 1
        grant = dict(settings.api.token_grant)
        if settings.organization_id:
            grant["organization_id"] = settings.organization_id
        try:
            async with session.post(
                settings.base_url + settings.api.token_path,
                data=grant,
                headers={"Accept": "application/json", "Authorization": authorization},
            ) as response:
                if response.status in (400, 401, 403):
                    raise AuthError(
                        f"the platform refused the API keys (token endpoint "
                        f"{settings.base_url + settings.api.token_path} answered "
                        f"{response.status}); check client_id, client_secret"
                        + (
                            " and organization_id"
                            if settings.platform == "hootsuite"
                            else " and region"
                        )
                    )
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(
                        f"token endpoint answered {response.status}",
                        _retry_after(response.headers),
                    )
                if response.status != 200:
                    raise AuthError(f"token endpoint answered {response.status}")
                raw = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _Retryable(f"token request failed: {type(e).__name__}") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise _Retryable("token endpoint answered 200 with a body that is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
            raise _Retryable("token endpoint answered without an access_token")
        try:
            lifetime = float(payload.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        return payload["access_token"], lifetime

    # -- calls ---------------------------------------------------------------------

    async def act(self, conversation_id: str, body: Mapping[str, Any]) -> Outcome:
        """POST a conversation action (sendMessage / applyTopics / complete)."""
        path = self._settings.api.conversation_path(quote(conversation_id, safe=""))
        return await self._call("POST", path, conversation_id, json_body=dict(body))

    async def attempt(self, conversation_id: str, body: Mapping[str, Any]) -> Attempt:
        """POST a conversation action once (a rejected token is refreshed once); the
        caller (the outbox sender) owns the retries."""
        path = self._settings.api.conversation_path(quote(conversation_id, safe=""))
        refreshed = False
        while True:
            try:
                outcome = await self._once(
                    "POST", path, conversation_id, dict(body), None, None, refreshed
                )
            except _TokenRejected:
                if refreshed:
                    return Attempt(Outcome.FAILED, "a fresh access token was rejected")
                refreshed = True
                continue
            except AuthError as e:
                self.stats.failures += 1
                return Attempt(Outcome.FAILED, str(e))
            except _Retryable as e:
                return Attempt(None, e.reason, e.retry_after)
            return Attempt(outcome, outcome.value)

    async def upload_attachment(
        self, conversation_id: str, filename: str, data: bytes, content_type: str
    ) -> Outcome:
        """PUT the raw bytes of an attachment, to be sent afterwards by filename."""
        path = self._settings.api.attachment_path(
            quote(conversation_id, safe=""), quote(filename, safe="")
        )
        return await self._call(
            "PUT", path, conversation_id, data=data, headers={"Content-Type": content_type}
        )

    async def _call(
        self,
        method: str,
        path: str,
        conversation_id: str,
        *,
        json_body: Optional[Dict[str, Any]] = None,
        data: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Outcome:
        settings = self._settings
        deadline = time.monotonic() + settings.retry_deadline
        refreshed = False
        attempt = 0
        what = f"{method} {settings.base_url}{path}"
        while True:
            attempt += 1
            try:
                return await self._once(
                    method, path, conversation_id, json_body, data, headers, refreshed
                )
            except _TokenRejected:
                if refreshed:
                    logger.error(
                        "Sparkcentral rejected a fresh access token for conversation %s; "
                        "not delivered: %s",
                        conversation_id,
                        what,
                    )
                    self.stats.failures += 1
                    return Outcome.FAILED
                refreshed = True
                attempt -= 1  # the one refresh does not count as a retry
                continue
            except AuthError as e:
                logger.error("%s. Not delivered to conversation %s: %s", e, conversation_id, what)
                self.stats.failures += 1
                return Outcome.FAILED
            except _Retryable as e:
                delay = self._backoff(attempt, e.retry_after)
                remaining = deadline - time.monotonic()
                if attempt >= settings.max_attempts or delay > remaining:
                    logger.error(
                        "Sparkcentral unavailable: gave up on conversation %s after %d "
                        "attempt(s) (last: %s); not delivered: %s",
                        conversation_id,
                        attempt,
                        e.reason,
                        what,
                    )
                    self.stats.failures += 1
                    return Outcome.FAILED
                self.stats.retries += 1
                logger.warning(
                    "Sparkcentral call for conversation %s failed (%s); retry %d in %.2fs",
                    conversation_id,
                    e.reason,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        settings = self._settings
        ceiling = min(settings.backoff_max, settings.backoff_base * (2 ** (attempt - 1)))
        jittered = self._rng.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0
        if retry_after is not None:
            return max(retry_after, jittered)
        return jittered

    async def _once(
        self,
        method: str,
        path: str,
        conversation_id: str,
        json_body: Optional[Dict[str, Any]],
        data: Optional[bytes],
        headers: Optional[Dict[str, str]],
        refreshed: bool,
    ) -> Outcome:
        token = await self.get_token()
        session = self._get_session()
        all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if headers:
            all_headers.update(headers)
        self.stats.requests += 1
        try:
            async with session.request(
                method,
                self._settings.base_url + path,
                json=json_body,
                data=data,
                headers=all_headers,
            ) as response:
                status = response.status
                if status == 200 or status == 201 or status == 204:
                    await response.read()
                    return Outcome.DELIVERED
                if status == 401:
                    self.invalidate_token(token)
                    raise _TokenRejected()
                if status == 404:
                    logger.info(
                        "Conversation %s is no longer assigned to this virtual agent "
                        "(404); dropped: %s %s",
                        conversation_id,
                        method,
                        path,
                    )
                    return Outcome.GONE
                if status == 429 or status >= 500:
                    raise _Retryable(f"HTTP {status}", _retry_after(response.headers))
                detail = (await response.text())[:300]
                logger.error(
                    "Sparkcentral rejected %s %s for conversation %s with %d: %s",
                    method,
                    path,
                    conversation_id,
                    status,
                    detail,
                )
                self.stats.failures += 1
                return Outcome.FAILED
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise _Retryable(f"{type(e).__name__}") from None

    async def fetch(self, url: str, *, max_bytes: int, timeout: float) -> Tuple[bytes, str]:
        """Download a file the bot wants to send (bounded size and time).

        Raises ``ValueError`` with a reason when it can't be had.
        """
        session = self._get_session()
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > max_bytes:
                    raise ValueError(f"{declared} bytes is over the {max_bytes}-byte limit")
                chunks = []
                size = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ValueError(f"over the {max_bytes}-byte limit")
                    chunks.append(chunk)
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                return b"".join(chunks), content_type
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ValueError(type(e).__name__) from None


class _TokenRejected(Exception):
    pass


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` header value for HTTP Basic (RFC 7617, UTF-8).

    Built here because aiohttp 3.14 deprecates ``BasicAuth`` and the ``auth`` parameter,
    while aiohttp 3.8/3.9 (Rasa 3.6) have no ``encode_basic_auth`` helper to replace them.
    """
    if ":" in client_id:
        # the colon separates the two halves: such an id could never be read back
        raise AuthError("client_id must not contain ':'")
    credentials = f"{client_id}:{client_secret}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # an HTTP date: honour it roughly
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
