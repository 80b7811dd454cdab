"""The emulator's HTTP API: what the bot calls, and the admin and asset routes.

Paths and token grant follow the platform played (``rasa_sparkcentral.protocol.PLATFORMS``):

- token: ``POST /virtual-agent/oauth2/token`` (classic: Basic auth,
  ``grant_type=client_credentials&scope=client-read``) or ``POST /oauth2/token`` (Inbox 2.0:
  Basic auth only, ``grant_type=organization_app&organization_id=<id>``) -> Bearer token;
- ``POST {prefix}/virtual-agent/conversations/{id}``: a bot action, applied by the state machine;
- ``PUT  {prefix}/virtual-agent/conversations/{id}/attachments/{filename}``: an upload
  (filename ``[A-Za-z0-9._-]+``, fewer than 10,000,000 bytes);
- ``/_emulator/...``: admin (admin.py) and assets (assets.py).

Every request but the admin ones is recorded (``calls``) and published as an event. The
fault gate (``faults``: delays, planned errors, rate limits, revoked tokens) stands before
the token and REST handlers; then the credentials are checked, then the queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
import secrets
import time
import weakref
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from aiohttp import web

from rasa_sparkcentral.protocol import ATTACHMENT_FILENAME_PATTERN, SPARKCENTRAL

from .admin import EmulatorControl, add_admin_routes
from .assets import add_asset_routes, default_assets
from .events import EventBus
from .faults import Fault, FaultPlan, next_token_sequence
from .machine import ConversationMachine
from .models import (
    QUEUE_BOT,
    Conversation,
    EmulatorEvent,
    EmulatorSettings,
    JSONDict,
    RecordedCall,
    parse_json,
)

#: The planned fault a request met, kept on the request for the recording middleware.
#: aiohttp 3.14 warns on string request keys; older releases have no web.RequestKey.
FAULT_KEY: Any = web.RequestKey("fault", str) if hasattr(web, "RequestKey") else "fault"
ADMIN_PREFIX = "/_emulator/"
_FILENAME = re.compile(ATTACHMENT_FILENAME_PATTERN)
#: Form fields that carry client credentials; Inbox 2.0 wants them in the Basic header only.
_BODY_CREDENTIALS = ("client_id", "client_secret")
#: The ``message`` of a 401 for a token that was valid once (expired or revoked): the bot
#: is expected to fetch a new one and try again. A missing or unknown token says otherwise.
EXPIRED_TOKEN_MESSAGE = "the access token expired"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SparkcentralApi:
    """Routes, authentication, recording and the fault gate of one emulator."""

    def __init__(
        self, settings: EmulatorSettings, machine: ConversationMachine, bus: EventBus
    ) -> None:
        self.settings = settings
        self.machine = machine
        self.bus = bus
        self.faults = FaultPlan()
        self.assets: Dict[str, Tuple[str, bytes]] = default_assets()
        """Files served under /_emulator/assets/{name} (see assets.py)."""
        self.calls: List[RecordedCall] = []
        self.token_requests = 0
        """Tokens successfully issued."""
        self.connections_opened = 0
        """TCP connections that carried a request (counted on their first request)."""
        self._connections: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._tokens: Dict[str, Tuple[float, int]] = {}

    def reset(self) -> None:
        """Forget the calls and counters, install a fresh FaultPlan; tokens stay valid."""
        self.calls.clear()
        self.token_requests = 0
        self.connections_opened = 0  # connections open now are not counted again
        cutoff = self.faults.token_cutoff
        self.faults = FaultPlan()
        self.faults.token_cutoff = cutoff

    def build_app(self, control: EmulatorControl) -> web.Application:
        """The aiohttp application; ``control`` drives the admin routes."""
        app = web.Application(
            middlewares=[self._recording_middleware()],
            # room above the limit, so that an upload at or over it is answered 400
            client_max_size=max(self.settings.max_attachment_size, 1024 * 1024) * 2,
        )
        api = self.settings.api
        app.router.add_post(api.token_path, self._handle_token)
        app.router.add_post(api.conversation_path("{conversationId}"), self._handle_conversation)
        app.router.add_put(
            api.attachment_path("{conversationId}", "{filename}"), self._handle_attachment
        )
        add_admin_routes(app, control)
        add_asset_routes(app, lambda name: self.assets.get(name))
        return app

    @property
    def connections_open(self) -> int:
        """TCP connections to the emulator that are open right now."""
        return sum(1 for transport in list(self._connections) if not transport.is_closing())

    def _count_connection(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None and transport not in self._connections:
            self._connections.add(transport)
            self.connections_opened += 1

    def _recording_middleware(self) -> Any:
        api = self

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            status = 500
            response_json: Any = None
            body = b""
            api._count_connection(request)
            try:
                body = await request.read()
                response = await handler(request)
                status = response.status
                if isinstance(response, web.Response) and isinstance(response.body, bytes):
                    response_json = parse_json(response.body)
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                if not request.path.startswith(ADMIN_PREFIX):
                    api._record_call(request, body, status, response_json)

        return record

    def _record_call(
        self, request: web.Request, body: bytes, status: int, response_json: Any
    ) -> None:
        call = RecordedCall(
            method=request.method,
            path=request.path,
            headers=dict(request.headers.items()),
            body=body,
            json=parse_json(body) if body else None,
            status=status,
            at=time.monotonic(),
            query=dict(request.query.items()),
            response_json=response_json,
            fault=request.get(FAULT_KEY),
        )
        self.calls.append(call)
        self.settings.trim(self.calls)
        self.bus.emit(
            EmulatorEvent(
                kind="call",
                line=f"<- {call.method} {call.path}: {status}"
                + (f" (fault: {call.fault})" if call.fault else ""),
                conversation_id=call.conversation_id,
                call=call,
            )
        )

    @staticmethod
    def _fault_response(request: web.Request, fault: Fault) -> web.Response:
        request[FAULT_KEY] = fault.kind
        raw = fault.raw_body()
        if raw is not None:
            return web.Response(
                body=raw, status=fault.status, content_type="text/html", headers=fault.headers()
            )
        return web.json_response(fault.body(), status=fault.status, headers=fault.headers())

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        if self.faults.token_delay > 0:
            await asyncio.sleep(self.faults.token_delay)
        fault = self.faults.take_token_fault()
        if fault is not None:
            return self._fault_response(request, fault)
        form = parse_qs((await request.read()).decode("utf-8", "replace"))
        hootsuite = self.settings.platform != SPARKCENTRAL
        if hootsuite and any(name in form for name in _BODY_CREDENTIALS):
            return web.json_response(
                {
                    "error": "invalid_request",
                    "error_description": "client credentials go in the Basic header only",
                },
                status=400,
            )
        if not self._basic_auth_ok(request.headers.get("Authorization")):
            return web.json_response(
                {"error": "invalid_client"},
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{self.settings.platform}"'},
            )
        refusal = self._grant_refusal(form)
        if refusal is not None:
            return web.json_response(refusal, status=400)
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        if len(self._tokens) >= 256:
            self._tokens = {
                t: (exp, seq)
                for t, (exp, seq) in self._tokens.items()
                if exp > now and self.faults.token_valid(seq)
            }
        self._tokens[token] = (now + self.settings.token_lifetime, next_token_sequence())
        self.token_requests += 1
        self.bus.emit(EmulatorEvent(kind="token", line=f"token issued ({self.token_requests})"))
        answer: JSONDict = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(self.settings.token_lifetime),
        }
        scope = form.get("scope")
        if scope:
            answer["scope"] = scope[0]
        return web.json_response(
            answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
        )

    def _grant_refusal(self, form: Dict[str, List[str]]) -> Optional[JSONDict]:
        """Why the token form is refused (400), or None; the grant the platform publishes."""
        expected = dict(self.settings.api.token_grant)
        if self.settings.platform != SPARKCENTRAL:
            expected["organization_id"] = self.settings.organization_id
        if form.get("grant_type") != [expected["grant_type"]]:
            return {"error": "unsupported_grant_type"}
        for name, value in expected.items():
            if form.get(name) != [value]:
                error = "invalid_scope" if name == "scope" else "invalid_request"
                return {"error": error, "error_description": f"{name} must be {value!r}"}
        return None

    def _basic_auth_ok(self, header: Optional[str]) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return False
        id_ok = hmac.compare_digest(client_id.encode(), self.settings.client_id.encode())
        secret_ok = hmac.compare_digest(
            client_secret.encode(), self.settings.client_secret.encode()
        )
        return id_ok and secret_ok

    def _bearer_problem(self, header: Optional[str]) -> Optional[str]:
        """Why the Bearer token is refused (None: it is valid)."""
        if not header:
            return "missing access token"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return "missing access token"
        issued = self._tokens.get(token.strip())
        if issued is None:
            return "unknown access token"
        expires_at, sequence = issued
        if time.monotonic() < expires_at and self.faults.token_valid(sequence):
            return None
        return EXPIRED_TOKEN_MESSAGE

    async def _rest_gate(
        self, request: web.Request
    ) -> Tuple[Optional[Conversation], Optional[web.Response]]:
        """Delay, faults, Bearer token, then the conversation must be with the bot."""
        if self.faults.delay > 0:
            await asyncio.sleep(self.faults.delay)
        fault = self.faults.take_rest_fault()
        if fault is not None:
            return None, self._fault_response(request, fault)
        problem = self._bearer_problem(request.headers.get("Authorization"))
        if problem is not None:
            return None, web.json_response(
                {"error": "invalid_token", "message": problem},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        cid = request.match_info["conversationId"]
        conv = self.machine.conversations.get(cid)
        if conv is None or conv.queue != QUEUE_BOT:
            where = "unknown" if conv is None else f"in the {conv.queue!r} queue"
            return None, web.json_response(
                {
                    "error": "not_found",
                    "message": f"conversation {cid} is not assigned to this virtual agent "
                    f"({where})",
                },
                status=404,
            )
        return conv, None

    async def _handle_conversation(self, request: web.Request) -> web.StreamResponse:
        conv, refusal = await self._rest_gate(request)
        if refusal is not None or conv is None:
            assert refusal is not None
            return refusal
        payload = parse_json(await request.read())
        if not isinstance(payload, dict):
            return web.json_response(
                {"error": "bad_request", "message": "the body must be a JSON object"},
                status=400,
            )
        error = self.machine.validate(conv, payload, via="rest")
        if error is not None:
            return web.json_response({"error": "bad_request", "message": error}, status=400)
        self.machine.apply(conv, payload, via="rest")
        return web.json_response({})

    async def _handle_attachment(self, request: web.Request) -> web.StreamResponse:
        conv, refusal = await self._rest_gate(request)
        if refusal is not None or conv is None:
            assert refusal is not None
            return refusal
        filename = request.match_info["filename"]
        content_type = request.headers.get("Content-Type", "").strip()
        body = await request.read()

        def bad(message: str, status: int = 400) -> web.Response:
            return web.json_response({"error": "bad_request", "message": message}, status=status)

        if not _FILENAME.match(filename):
            return bad(f"the filename {filename!r} must match {ATTACHMENT_FILENAME_PATTERN}")
        if not content_type:
            return bad("a Content-Type header is required")
        if request.content_length is None:
            return bad("a Content-Length header is required", 411)
        if not body:
            return bad("the attachment is empty")
        if request.content_length != len(body):
            return bad(
                f"Content-Length {request.content_length} does not match the body "
                f"({len(body)} bytes)"
            )
        limit = self.settings.max_attachment_size
        if len(body) >= limit:
            return bad(f"an attachment must be fewer than {limit} bytes ({len(body)} sent)")
        conv.attachments[filename] = (content_type, body)
        self.bus.notify()
        return web.json_response({})


def is_token_expiry(call: RecordedCall) -> bool:
    """A REST call refused only because its token had expired (a normal token refresh)."""
    answer = call.response_json
    return (
        call.status == 401
        and call.fault is None
        and isinstance(answer, dict)
        and answer.get("message") == EXPIRED_TOKEN_MESSAGE
    )
