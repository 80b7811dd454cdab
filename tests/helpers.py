"""Small helpers shared by the end-to-end tests (no fixtures here)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import aiohttp

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator


async def get_tracker(
    rasa_url: str, conversation_id: str, include_events: str = "AFTER_RESTART"
) -> Dict[str, Any]:
    """The conversation's tracker through Rasa's HTTP API (``--enable-api``)."""
    async with aiohttp.ClientSession() as session, session.get(
        f"{rasa_url}/conversations/{conversation_id}/tracker",
        params={"include_events": include_events},
    ) as response:
        assert response.status == 200, await response.text()
        tracker: Dict[str, Any] = await response.json()
        return tracker


def user_texts(tracker: Dict[str, Any]) -> List[str]:
    return [e.get("text") for e in tracker["events"] if e["event"] == "user"]


async def settle(emu: SparkcentralEmulator, conversation_id: str, quiet: float = 1.0) -> None:
    """Wait until the bot has said nothing new for ``quiet`` seconds (for negative checks)."""
    seen = -1
    for _ in range(60):
        count = len(emu.actions_for(conversation_id))
        if count == seen:
            return
        seen = count
        await asyncio.sleep(quiet)
    raise AssertionError("the bot never fell silent")


async def say_and_wait(
    emu: SparkcentralEmulator, conversation_id: str, text: str, replies: int = 1
) -> List[str]:
    """The contact says ``text``; return the bot's next ``replies`` texts."""
    before = len(emu.bot_texts(conversation_id))
    result = await emu.contact_says(conversation_id, text)
    assert result.status == 200, result.text
    texts = await emu.wait_for_bot_messages(conversation_id, before + replies)
    return texts[before:]


def compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


_DOMAIN: Dict[str, Any] = {}


def response_text(name: str, **slots: Any) -> str:
    """The (first) text of a response in example_bot's domain, with slots filled in."""
    if not _DOMAIN:
        import pathlib

        import yaml

        path = pathlib.Path(__file__).resolve().parent.parent / "example_bot" / "domain.yml"
        _DOMAIN.update(yaml.safe_load(path.read_text()))
    text = str(_DOMAIN["responses"][name][0]["text"])
    for key, value in slots.items():
        text = text.replace("{" + key + "}", str(value))
    return text
