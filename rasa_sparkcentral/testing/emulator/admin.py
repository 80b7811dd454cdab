"""Admin endpoints under ``/_emulator/``: drive the emulator from another process (JSON).

- ``POST /_emulator/conversations`` ``{conversationId?, contactProfile?, contactAttributes?,
  medium?, channel?, eventType?, name?, vip?, language?}`` -> ``{conversationId, webhook}``
- ``GET  /_emulator/conversations`` -> ``{conversations: [{conversationId, queue, ...}]}``
- ``GET  /_emulator/conversations/{id}`` -> queue, transcript, actions, attachments...
- ``POST /_emulator/conversations/{id}/messages`` ``{text?, payload?, trigger?, topics?,
  force?}`` -> the contact writes (``messageId`` in the answer)
- ``POST /_emulator/conversations/{id}/handback`` ``{eventType?}`` -> back to the bot
- ``POST /_emulator/conversations/{id}/agent`` ``{text}`` -> a human agent replies
- ``POST /_emulator/conversations/{id}/resolve`` -> a human agent resolves it
- ``GET  /_emulator/conversations/{id}/attachments/{filename}`` -> the uploaded bytes
- ``GET  /_emulator/webhooks?conversationId=ID&limit=N`` -> webhook deliveries and answers
- ``GET  /_emulator/calls?limit=N&path=PREFIX`` -> recorded calls
- ``GET  /_emulator/stats``
- ``GET|POST /_emulator/faults`` -> read / update the FaultPlan (see ``FaultPlan.apply_dict``)
- ``GET|POST /_emulator/config`` ``{webhookUrl?, tokenLifetime?, knownTopics?}`` -> those,
  and read-only what the emulator plays: ``platform``, ``organizationId``,
  ``successorFields`` and the published rules (``webhookTimeout``, ``webhookRetries``,
  ``webhookRetryBackoffMax``, ``replyTimeout``, ``delegatedQuestionTimeout``)
- ``POST /_emulator/reset``

``webhook`` in answers is ``{status, body, elapsed, idempotencyKey, delivered, applied,
error}``. A webhook that cannot be reached gives 502 ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Set,
)

import aiohttp
from aiohttp import web

from .faults import FaultPlan
from .models import Conversation, JSONDict, RecordedCall, WebhookResult

AdminHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EmulatorControl(Protocol):
    """What the admin routes drive (``SparkcentralEmulator`` is one)."""

    webhook_url: str
    token_lifetime: float
    known_topics: Optional[Set[str]]
    faults: FaultPlan
    organization_id: str
    webhook_timeout: float
    webhook_retries: int
    webhook_retry_backoff_max: float
    reply_timeout: float
    delegated_question_timeout: float

    @property
    def platform(self) -> str: ...

    @property
    def start_conversation(self) -> Callable[..., Awaitable[WebhookResult]]: ...

    @property
    def conversations(self) -> Dict[str, Conversation]: ...

    @property
    def calls(self) -> List[RecordedCall]: ...

    @property
    def extended_fields(self) -> bool: ...

    def conversation(self, conversation_id: str) -> Conversation: ...

    async def contact_says(
        self,
        conversation_id: str,
        text: Optional[str] = None,
        *,
        payload: Optional[str] = None,
        trigger: Optional[Mapping[str, Any]] = None,
        topics: Optional[Sequence[str]] = None,
        force: bool = False,
    ) -> WebhookResult: ...

    async def hand_back(self, conversation_id: str, event_type: str = ...) -> WebhookResult: ...

    def agent_says(self, conversation_id: str, text: str) -> None: ...

    def agent_resolves(self, conversation_id: str) -> None: ...

    @property
    def webhook_deliveries(self) -> List[WebhookResult]: ...

    def stats(self) -> JSONDict: ...

    def reset(self) -> None: ...


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def add_admin_routes(app: web.Application, emu: EmulatorControl) -> None:
    def guarded(handler: Callable[[web.Request], Awaitable[Any]]) -> AdminHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                answer = await handler(request)
            except AdminError as exc:
                return web.json_response({"error": exc.message}, status=exc.status)
            except KeyError as exc:
                return web.json_response({"error": str(exc.args[0])}, status=404)
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return web.json_response(
                    {"error": f"webhook delivery to {emu.webhook_url} failed: {exc!r}"},
                    status=502,
                )
            return web.json_response(answer)

        return wrapped

    async def body_of(request: web.Request) -> JSONDict:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise AdminError(400, "the body must be JSON") from None
        if not isinstance(parsed, dict):
            raise AdminError(400, "the body must be a JSON object")
        return parsed

    async def start(request: web.Request) -> JSONDict:
        body = await body_of(request)
        kwargs: Dict[str, Any] = {}
        for key, name in (
            ("contactProfile", "contact_profile"),
            ("contactAttributes", "contact_attributes"),
            ("medium", "medium"),
            ("channel", "channel"),
            ("eventType", "event_type"),
            ("name", "name"),
            ("vip", "vip"),
            ("language", "language"),
        ):
            if key in body:
                kwargs[name] = body[key]
        result = await emu.start_conversation(body.get("conversationId"), **kwargs)
        return {"conversationId": result.conversation_id, "webhook": result.to_dict()}

    async def list_conversations(request: web.Request) -> JSONDict:
        return {
            "conversations": [
                {
                    "conversationId": c.id,
                    "queue": c.queue,
                    "primaryIdentifier": c.contact_profile.get("primaryIdentifier"),
                    "messages": len(c.transcript),
                    "vip": c.contact_profile.get("vip"),
                    "medium": c.medium,
                    "topics": sorted(c.topics),
                    "last": c.transcript[-1].to_dict() if c.transcript else None,
                }
                for c in emu.conversations.values()
            ]
        }

    async def show(request: web.Request) -> JSONDict:
        return emu.conversation(request.match_info["cid"]).to_dict(emu.extended_fields)

    async def message(request: web.Request) -> JSONDict:
        body = await body_of(request)
        text = body.get("text")
        if text is not None and not isinstance(text, str):
            raise AdminError(400, "text must be a string")
        payload = body.get("payload")
        if payload is not None and not isinstance(payload, str):
            raise AdminError(400, "payload must be a string")
        trigger = body.get("trigger")
        if trigger is not None and not isinstance(trigger, dict):
            raise AdminError(400, "trigger must be an object {type, action}")
        topics = body.get("topics")
        if topics is not None and (
            not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)
        ):
            raise AdminError(400, "topics must be a list of strings")
        result: WebhookResult = await emu.contact_says(
            request.match_info["cid"],
            text,
            payload=payload,
            trigger=trigger,
            topics=topics,
            force=bool(body.get("force", False)),
        )
        return {
            "conversationId": request.match_info["cid"],
            "messageId": result.message_id,
            "webhook": result.to_dict(),
        }

    async def handback(request: web.Request) -> JSONDict:
        body = await body_of(request)
        event_type = body.get("eventType", "CONVERSATION_STARTED")
        result = await emu.hand_back(request.match_info["cid"], str(event_type))
        return {"conversationId": request.match_info["cid"], "webhook": result.to_dict()}

    async def agent(request: web.Request) -> JSONDict:
        body = await body_of(request)
        text = body.get("text")
        if not isinstance(text, str):
            raise AdminError(400, "text (a string) is required")
        emu.agent_says(request.match_info["cid"], text)
        return {"conversationId": request.match_info["cid"], "ok": True}

    async def resolve(request: web.Request) -> JSONDict:
        emu.agent_resolves(request.match_info["cid"])
        return {"conversationId": request.match_info["cid"], "ok": True}

    async def attachment(request: web.Request) -> web.StreamResponse:
        conv = emu.conversations.get(request.match_info["cid"])
        found = None if conv is None else conv.attachments.get(request.match_info["name"])
        if found is None:
            return web.json_response({"error": "no such attachment"}, status=404)
        content_type, data = found
        return web.Response(body=data, content_type=content_type)

    async def webhooks(request: web.Request) -> JSONDict:
        cid = request.query.get("conversationId")
        selected = [w for w in emu.webhook_deliveries if cid is None or w.conversation_id == cid]
        limit = request.query.get("limit")
        if limit is not None:
            try:
                count = int(limit)
            except ValueError:
                raise AdminError(400, "limit must be an integer") from None
            selected = selected[-count:] if count > 0 else []
        return {
            "webhooks": [
                {**w.to_dict(), "eventType": w.event_type, "conversationId": w.conversation_id}
                for w in selected
            ]
        }

    async def calls(request: web.Request) -> JSONDict:
        prefix = request.query.get("path", "")
        selected = [c for c in emu.calls if c.path.startswith(prefix)]
        limit = request.query.get("limit")
        if limit is not None:
            try:
                count = int(limit)
            except ValueError:
                raise AdminError(400, "limit must be an integer") from None
            selected = selected[-count:] if count > 0 else []
        return {"calls": [c.to_dict() for c in selected]}

    async def stats(request: web.Request) -> JSONDict:
        return emu.stats()

    async def get_faults(request: web.Request) -> JSONDict:
        return emu.faults.to_dict()

    async def set_faults(request: web.Request) -> JSONDict:
        emu.faults.apply_dict(await body_of(request))
        return emu.faults.to_dict()

    async def get_config(request: web.Request) -> JSONDict:
        return {
            "webhookUrl": emu.webhook_url,
            "tokenLifetime": emu.token_lifetime,
            "knownTopics": None if emu.known_topics is None else sorted(emu.known_topics),
            # read-only here: the platform played and its published rules
            "platform": emu.platform,
            "organizationId": emu.organization_id,
            "successorFields": emu.extended_fields,
            "webhookTimeout": emu.webhook_timeout,
            "webhookRetries": emu.webhook_retries,
            "webhookRetryBackoffMax": emu.webhook_retry_backoff_max,
            "replyTimeout": emu.reply_timeout,
            "delegatedQuestionTimeout": emu.delegated_question_timeout,
        }

    async def config(request: web.Request) -> JSONDict:
        body = await body_of(request)
        if "webhookUrl" in body:
            emu.webhook_url = str(body["webhookUrl"])
        if "tokenLifetime" in body:
            emu.token_lifetime = float(body["tokenLifetime"])
        if "knownTopics" in body:
            topics = body["knownTopics"]
            emu.known_topics = None if topics is None else {str(t) for t in topics}
        return await get_config(request)

    async def reset(request: web.Request) -> JSONDict:
        emu.reset()
        return {"ok": True}

    base = "/_emulator"
    app.router.add_post(f"{base}/conversations", guarded(start))
    app.router.add_get(f"{base}/conversations", guarded(list_conversations))
    app.router.add_get(f"{base}/conversations/{{cid}}", guarded(show))
    app.router.add_post(f"{base}/conversations/{{cid}}/messages", guarded(message))
    app.router.add_post(f"{base}/conversations/{{cid}}/handback", guarded(handback))
    app.router.add_post(f"{base}/conversations/{{cid}}/agent", guarded(agent))
    app.router.add_post(f"{base}/conversations/{{cid}}/resolve", guarded(resolve))
    app.router.add_get(f"{base}/conversations/{{cid}}/attachments/{{name}}", attachment)
    app.router.add_get(f"{base}/webhooks", guarded(webhooks))
    app.router.add_get(f"{base}/calls", guarded(calls))
    app.router.add_get(f"{base}/stats", guarded(stats))
    app.router.add_get(f"{base}/faults", guarded(get_faults))
    app.router.add_post(f"{base}/faults", guarded(set_faults))
    app.router.add_get(f"{base}/config", guarded(get_config))
    app.router.add_post(f"{base}/config", guarded(config))
    app.router.add_post(f"{base}/reset", guarded(reset))
