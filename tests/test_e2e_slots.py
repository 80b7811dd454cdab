"""Issue 5: channel details as slots that rules branch on, across turns and restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import aiohttp

from tests.helpers import get_tracker, response_text, say_and_wait
from tests.support import Bot, BotStarter

FIXTURES = Path(__file__).resolve().parent / "fixtures"


async def test_vip_contact_gets_the_vip_greeting(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Anna", vip=True)
    texts = await emu.wait_for_bot_messages(started.conversation_id, 1)
    assert texts == [response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")]


async def test_regular_contact_gets_the_normal_greeting(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Bert", vip=False)
    texts = await emu.wait_for_bot_messages(started.conversation_id, 1)
    assert texts == [response_text("utter_greet")]


async def test_vip_path_holds_on_later_turns(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Anna", vip=True)
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    await say_and_wait(emu, cid, "what are your opening hours?")
    assert await say_and_wait(emu, cid, "hello") == [
        response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")
    ]


async def test_response_uses_a_contact_attribute(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(language="fr-BE")
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    assert await say_and_wait(emu, cid, "what language am I using?") == [
        "Your browser language is fr-BE."
    ]


async def test_chatlayer_channel_details_are_readable_from_slots(bot: Bot) -> None:
    emu = bot.emulator
    details: Dict[str, Any] = json.loads((FIXTURES / "chatlayer_channel_details.json").read_text())
    started = await emu.start_conversation(
        contact_profile=details["contactProfile"],
        contact_attributes=details["contactAttributes"],
        medium=details["medium"],
        channel={"id": details["channelId"], "name": "Twitter DM"},
    )
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    # an inbound message does not repeat the profile; the slots still hold it after
    await say_and_wait(emu, cid, "what are your opening hours?")
    slots = (await get_tracker(bot.rasa.url, cid))["slots"]
    profile = details["contactProfile"]
    # the example bot declares the slots it reads; the rest of the details are in the
    # whole object (tests/test_cli_init_doctor.py fills every slot in a bot made by init)
    assert "sparkcentral_channel_id" not in slots
    assert slots["sparkcentral_primary_identifier"] == profile["primaryIdentifier"]
    assert slots["sparkcentral_vip"] is True
    assert slots["sparkcentral_contact_attributes"] == {
        a["attribute"]: a["value"] for a in details["contactAttributes"]
    }
    whole = slots["sparkcentral_channel_details"]
    assert whole["conversationId"] == cid
    assert whole["medium"] == "twit"
    assert whole["channelId"] == details["channelId"]
    assert whole["channelName"] == "Twitter DM"
    assert whole["contactProfile"] == profile  # profileUrl passes through
    assert whole["contactAttributes"] == details["contactAttributes"]


async def test_slots_survive_a_rasa_restart(start_bot: BotStarter, tmp_path: Path) -> None:
    handle = await start_bot(
        name="rasa-sqlite",
        tracker_store={"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "trackers.db")},
    )
    emu = handle.emulator
    started = await emu.start_conversation(name="Anna", vip=True, language="de-DE")
    cid = started.conversation_id
    vip_greeting = response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")
    assert await emu.wait_for_bot_messages(cid, 1) == [vip_greeting]
    await say_and_wait(emu, cid, "what are your opening hours?")

    await handle.restart()

    assert await say_and_wait(emu, cid, "hi") == [vip_greeting]
    assert await say_and_wait(emu, cid, "what language am I using?") == [
        "Your browser language is de-DE."
    ]
    slots = (await get_tracker(handle.url, cid))["slots"]
    assert slots["sparkcentral_vip"] is True
    assert slots["sparkcentral_primary_identifier"] == "Anna"


async def test_reassignment_refreshes_the_details(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Anna", vip=True)
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    await say_and_wait(emu, cid, "I want to talk to a person")
    await emu.wait_for_queue(cid, "new")
    # the contact lost VIP status and changed name while with the human agent
    profile = dict(emu.conversations[cid].contact_profile, vip=False, primaryIdentifier="Ann")
    emu.conversations[cid].contact_profile = profile
    before = len(emu.bot_texts(cid))
    await emu.hand_back(cid)
    texts = await emu.wait_for_bot_messages(cid, before + 1)
    assert texts[before:] == [response_text("utter_greet")]
    slots = (await get_tracker(bot.rasa.url, cid))["slots"]
    assert slots["sparkcentral_vip"] is False
    assert slots["sparkcentral_primary_identifier"] == "Ann"


async def _restart_in_rasa(rasa_url: str, conversation_id: str) -> None:
    """What ``action_restart`` does to a tracker: a ``restart`` event (Rasa's HTTP API)."""
    async with aiohttp.ClientSession() as session, session.post(
        f"{rasa_url}/conversations/{conversation_id}/tracker/events",
        json={"event": "restart"},
    ) as response:
        assert response.status == 200, await response.text()


async def test_the_details_come_back_after_restarts_the_bot_runs(bot: Bot) -> None:
    """Only the first message carries the details (the default); each restart the bot
    runs empties the slots, and the next message's slot action brings them back: after
    the first restart from the message that carried them, after the second from the slot
    events that refilled them."""
    emu = bot.emulator
    started = await emu.start_conversation(name="Anna", vip=True, language="de-DE")
    cid = started.conversation_id
    vip_greeting = response_text("utter_greet_vip", sparkcentral_primary_identifier="Anna")
    assert await emu.wait_for_bot_messages(cid, 1) == [vip_greeting]
    for _ in range(2):
        await _restart_in_rasa(bot.rasa.url, cid)
        emptied = (await get_tracker(bot.rasa.url, cid))["slots"]
        assert emptied["sparkcentral_vip"] is None
        assert await say_and_wait(emu, cid, "hi") == [vip_greeting]
        tracker = await get_tracker(bot.rasa.url, cid)
        slots = tracker["slots"]
        assert slots["sparkcentral_primary_identifier"] == "Anna"
        assert slots["sparkcentral_language"] == "de-DE"
        assert slots["sparkcentral_channel_details"]["contactProfile"]["vip"] is True
        latest = tracker["latest_message"]["metadata"]["sparkcentral"]
        assert "contactProfile" not in latest  # not carried
