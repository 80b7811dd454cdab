"""Static files the emulator serves under ``/_emulator/assets/{name}``.

Stand-ins for the images a bot links to (a CDN in production), so that image replies
can be tried end to end: the connector downloads the file, uploads it to the emulator's
attachment endpoint and sends it by filename. ``emu.assets`` maps a name to
``(content_type, bytes)``; remove a name to make its URL answer 404.
"""

from __future__ import annotations

import struct
import zlib
from typing import Callable, Dict, Optional, Tuple

from aiohttp import web

Asset = Tuple[str, bytes]

ASSETS_PREFIX = "/_emulator/assets/"


def png(width: int = 16, height: int = 16, rgb: Tuple[int, int, int] = (29, 161, 242)) -> bytes:
    """A valid, solid-colour PNG image."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def default_assets() -> Dict[str, Asset]:
    return {"logo.png": ("image/png", png())}


def add_asset_routes(app: web.Application, lookup: Callable[[str], Optional[Asset]]) -> None:
    """Serve ``lookup(name)`` (content type, bytes) under the assets prefix; None is 404."""

    async def serve(request: web.Request) -> web.Response:
        asset = lookup(request.match_info["name"])
        if asset is None:
            return web.json_response({"error": "no such asset"}, status=404)
        content_type, data = asset
        return web.Response(body=data, content_type=content_type)

    app.router.add_get(ASSETS_PREFIX + "{name}", serve)
