"""reply_mode: webhook — the turn's replies ride in the webhook answer."""

from __future__ import annotations

import asyncio

from tests.helpers import response_text
from tests.support import BotStarter

CONVERSATION_PATH = "/virtual-agent/conversations/"


async def test_answer_carries_the_reply_and_the_handover(start_bot: BotStarter) -> None:
    handle = await start_bot(name="rasa-webhook-mode", reply_mode="webhook")
    emu = handle.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    assert started.json == {"sendMessage": {"text": response_text("utter_greet")}}

    result = await emu.contact_says(cid, "what are your opening hours?")
    assert result.json == {"sendMessage": {"text": response_text("utter_opening_hours")}}

    result = await emu.contact_says(cid, "I want to talk to a person")
    assert result.json == {
        "sendMessage": {"text": response_text("utter_handoff")},
        "complete": "HANDOVER",
    }
    assert emu.conversations[cid].queue == "new"
    # nothing needed the REST API
    assert emu.calls_to(CONVERSATION_PATH + cid) == []
    assert emu.token_requests == 0


async def test_what_the_answer_cannot_carry_comes_before_the_next_turn(
    start_bot: BotStarter,
) -> None:
    handle = await start_bot(name="rasa-webhook-order", reply_mode="webhook")
    emu = handle.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    # two turns in flight: the logo turn has two messages, the answer carries one
    logo, hours = await asyncio.gather(
        emu.contact_says(cid, "show me your logo"),
        emu.contact_says(cid, "what are your opening hours?"),
    )
    assert logo.json == {"sendMessage": {"text": response_text("utter_logo")}}
    assert hours.json == {"sendMessage": {"text": response_text("utter_opening_hours")}}
    await emu.wait_for(lambda: len(emu.actions_for(cid)) >= 4)
    sent = [a["sendMessage"] for a in emu.actions_for(cid)]
    assert sent[1] == {"text": response_text("utter_logo")}
    assert set(sent[2]) == {"attachment"}  # over REST, before the next turn's answer
    assert sent[3] == {"text": response_text("utter_opening_hours")}


async def test_without_api_keys_everything_fits_in_the_answer(start_bot: BotStarter) -> None:
    handle = await start_bot(
        name="rasa-webhook-no-keys", reply_mode="webhook", client_id=None, client_secret=None
    )
    emu = handle.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    result = await emu.contact_says(cid, "show me your logo")
    # the image can't be uploaded without API keys: its link is joined to the text
    text = result.json["sendMessage"]["text"]
    assert text.startswith(response_text("utter_logo") + "\n\n")
    assert text.endswith("/_emulator/assets/logo.png")
    result = await emu.contact_says(cid, "I have a question about my invoice")
    assert result.json == {
        "sendMessage": {"text": response_text("utter_billing")},
        "applyTopics": ["billing"],
    }
    assert "billing" in emu.conversations[cid].topics
    assert [c.path for c in emu.calls if c.path.startswith("/virtual-agent/")] == []
