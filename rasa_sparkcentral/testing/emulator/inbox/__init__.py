"""The emulator's web inbox: ``GET /_emulator/ui`` and ``GET /_emulator/events``.

The page (``index.html``, ``inbox.css``, ``inbox.js`` beside this file: plain files, no build
step, nothing loaded from the network) shows the contact's side, the agent's side and an
event log. It reads and drives the emulator only through the ``/_emulator/...`` JSON API.

``/_emulator/events`` is a server-sent event stream: one small JSON object per emulator
event (``{"kind", "conversationId", "line"}``, see ``EmulatorEvent``); the page then fetches
what changed. The first message (``event: hello``) gives the emulator's clock
(``{"monotonic", "wall"}``) so the page can show the ``at`` times of the API as wall times.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Set, cast

from aiohttp import web

from ..models import EmulatorEvent


class EventSource(Protocol):
    """What the inbox needs of the emulator: its events (``SparkcentralEmulator`` is one)."""

    def add_listener(self, listener: Callable[[EmulatorEvent], None]) -> None: ...


UI_PATH = "/_emulator/ui"
EVENTS_PATH = "/_emulator/events"
STATIC_DIR = Path(__file__).resolve().parent
STATIC_FILES = {
    "index.html": "text/html",
    "inbox.css": "text/css",
    "inbox.js": "text/javascript",
}
HEARTBEAT_SECONDS = 15.0
QUEUE_SIZE = 1000
"""Messages kept for a slow page; past that it is told to fetch everything again."""

RESYNC = json.dumps({"kind": "resync", "conversationId": None, "line": ""})


class EventHub:
    """Fans emulator events out to the open event streams (one queue each)."""

    def __init__(self) -> None:
        self._streams: Set[asyncio.Queue[Optional[str]]] = set()

    @property
    def streams(self) -> int:
        return len(self._streams)

    def subscribe(self) -> asyncio.Queue[Optional[str]]:
        queue: asyncio.Queue[Optional[str]] = asyncio.Queue(QUEUE_SIZE)
        self._streams.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Optional[str]]) -> None:
        self._streams.discard(queue)

    def publish(self, event: EmulatorEvent) -> None:
        if not self._streams:
            return
        self._send(
            json.dumps(
                {"kind": event.kind, "conversationId": event.conversation_id, "line": event.line}
            )
        )

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self._send(None)

    def _send(self, message: Optional[str]) -> None:
        for queue in list(self._streams):
            if queue.full():  # a page that does not keep up fetches everything again
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)
            queue.put_nowait(message)


def _static(name: str) -> web.Response:
    return web.Response(
        body=(STATIC_DIR / name).read_bytes(),
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def add_inbox_routes(app: web.Application, emulator: EventSource) -> EventHub:
    """Serve the inbox page and the event stream on ``app``; return the hub of streams."""
    hub = EventHub()
    emulator.add_listener(hub.publish)

    async def page(request: web.Request) -> web.Response:
        return _static("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return _static(name)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = hub.subscribe()
        clock = json.dumps({"monotonic": time.monotonic(), "wall": time.time()})
        try:
            await response.write(f"retry: 1000\nevent: hello\ndata: {clock}\n\n".encode())
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                await response.write(f"data: {message}\n\n".encode())
        except (ConnectionResetError, RuntimeError):  # the page went away
            pass
        finally:
            hub.unsubscribe(queue)
        return response

    async def on_shutdown(app: web.Application) -> None:
        hub.close()

    # (cast: aiohttp's and aiosignal's annotations of signals disagree across versions)
    app.on_shutdown.append(cast(Any, on_shutdown))
    app.router.add_get(UI_PATH, page)
    app.router.add_get(UI_PATH + "/", page)
    app.router.add_get(UI_PATH + "/{name}", asset)
    app.router.add_get(EVENTS_PATH, events)
    return hub
