"""An emulator with no bot behind its webhook, for testing what talks to Sparkcentral's
API (the REST client, the reply sender, an output channel) on its own.

``async with emulator_without_bot() as emu:`` starts a loopback receiver that answers
every webhook delivery 200 and an emulator that delivers to it; both stop on exit.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import web

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator


async def _accept(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})


@asynccontextmanager
async def emulator_without_bot(**options: Any) -> AsyncIterator[SparkcentralEmulator]:
    """``options``: the emulator's own (``platform``, ``rules``, ...), not ``webhook_url``."""
    app = web.Application()
    app.router.add_post("/webhook", _accept)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        emulator = SparkcentralEmulator(webhook_url=f"http://127.0.0.1:{port}/webhook", **options)
        await emulator.start()
        try:
            yield emulator
        finally:
            await emulator.stop()
    finally:
        await runner.cleanup()
