"""``rasa run`` without an action server, while the domain uses our actions: the channel
says so once, at start, with the fix (issue 15, "diagnostics that name the cause")."""

from __future__ import annotations

import asyncio
from typing import List

from tests.helpers import response_text
from tests.support import BotStarter, RasaHandle

NO_ENDPOINT = "endpoints.yml has no action_endpoint"


def _lines(handle: RasaHandle, text: str) -> List[str]:
    return [line for line in handle.log_text().splitlines() if text in line]


async def _first_line(handle: RasaHandle, text: str, attempts: int = 240) -> List[str]:
    """The log's lines with ``text`` once there is one (polls for up to ~2 minutes)."""
    for _ in range(attempts):
        lines = _lines(handle, text)
        if lines:
            return lines
        await asyncio.sleep(0.5)
    return []


async def test_no_action_endpoint_is_logged_once_with_the_fix(start_bot: BotStarter) -> None:
    rasa = await start_bot(name="rasa-no-actions", action_url=None)
    lines = await _first_line(rasa, NO_ENDPOINT)
    assert len(lines) == 1, rasa.log_text()[-3000:]
    line = lines[0]
    assert "ERROR" in line.split(NO_ENDPOINT)[0]
    assert "action_handoff_to_sparkcentral" in line
    assert "action_sparkcentral_channel_details" in line
    assert "action_endpoint: url: http://localhost:5055/webhook" in line
    assert "rasa run actions" in line
    # a conversation goes on (the greeting needs no action server), and no second line
    emu = rasa.emulator
    started = await emu.start_conversation()
    assert started.conversation_id is not None
    texts = await emu.wait_for_bot_messages(started.conversation_id, 1)
    assert texts[0] == response_text("utter_greet")
    assert len(_lines(rasa, NO_ENDPOINT)) == 1
