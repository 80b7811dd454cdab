"""Issue 8: buttons that work, images as uploaded attachments, custom JSON and topics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import get_tracker, response_text, say_and_wait
from tests.support import Bot, BotStarter

PLANS = response_text("utter_plans") + "\n1. Basic\n2. Pro\n3. Enterprise"


def intents(tracker: Any) -> List[str]:
    return [
        e["parse_data"]["intent"]["name"]
        for e in tracker["events"]
        if e["event"] == "user" and not e["text"].startswith("/restart")
    ]


async def _conversation(emu: SparkcentralEmulator) -> str:
    started = await emu.start_conversation()
    await emu.wait_for_bot_messages(started.conversation_id, 1)
    return str(started.conversation_id)


async def test_buttons_are_numbered_and_answers_pick_them(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _conversation(emu)
    assert await say_and_wait(emu, cid, "which plan should I pick?") == [PLANS]
    assert await say_and_wait(emu, cid, "2") == [response_text("utter_plan_pro")]
    assert await say_and_wait(emu, cid, "which plan should I pick?") == [PLANS]
    assert await say_and_wait(emu, cid, "  eNTERPRISE ") == [response_text("utter_plan_enterprise")]
    assert await say_and_wait(emu, cid, "which plan should I pick?") == [PLANS]
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [
        response_text("utter_opening_hours")
    ]
    tracker = await get_tracker(bot.rasa.url, cid)
    assert intents(tracker)[-6:] == [
        "choose_plan",
        "plan_pro",
        "choose_plan",
        "plan_enterprise",
        "choose_plan",
        "ask_opening_hours",
    ]


async def test_a_number_without_buttons_is_plain_text(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _conversation(emu)
    await say_and_wait(emu, cid, "which plan should I pick?")
    await say_and_wait(emu, cid, "1")  # picks Basic, and the buttons are used up
    await say_and_wait(emu, cid, "1")
    tracker = await get_tracker(bot.rasa.url, cid)
    user = [e["text"] for e in tracker["events"] if e["event"] == "user"]
    assert user[-2:] == ["/plan_basic", "1"]


async def test_image_is_uploaded_then_sent_by_filename(
    bot: Bot, asset_host: SparkcentralEmulator
) -> None:
    emu = bot.emulator
    cid = await _conversation(emu)
    before = len(emu.actions_for(cid))
    await emu.contact_says(cid, "show me your logo")
    await emu.wait_for(lambda: len(emu.actions_for(cid)) >= before + 2)
    actions = emu.actions_for(cid)[before:]
    assert actions[0] == {"sendMessage": {"text": response_text("utter_logo")}}
    filename = actions[1]["sendMessage"]["attachment"]
    content_type, data = emu.conversations[cid].attachments[filename]
    assert content_type == "image/png"
    assert data == asset_host.assets["logo.png"][1]
    assert filename.startswith("logo-") and filename.endswith(".png")


async def test_unreachable_image_falls_back_to_the_link(
    bot: Bot, asset_host: SparkcentralEmulator
) -> None:
    emu = bot.emulator
    cid = await _conversation(emu)
    logo = asset_host.assets.pop("logo.png")
    try:
        replies = await say_and_wait(emu, cid, "show me your logo", replies=2)
    finally:
        asset_host.assets["logo.png"] = logo
    assert replies[0] == response_text("utter_logo")
    assert replies[1] == f"{asset_host.base_url}/_emulator/assets/logo.png"
    assert emu.conversations[cid].attachments == {}
    log = bot.rasa.log_text()
    assert any(
        cid in line and "WARNING" in line and "logo.png" in line for line in log.splitlines()
    )


async def test_custom_json_response_applies_topics(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _conversation(emu)
    assert await say_and_wait(emu, cid, "I have a question about my invoice") == [
        response_text("utter_billing")
    ]
    await emu.wait_for(lambda: "billing" in emu.conversations[cid].topics)
    assert {"applyTopics": ["billing"]} in emu.actions_for(cid)


async def test_intent_topics_follow_the_predicted_intents(start_bot: BotStarter) -> None:
    handle = await start_bot(name="rasa-intent-topics", intent_topics=True)
    emu = handle.emulator
    cid = await _conversation(emu)
    await say_and_wait(emu, cid, "what are your opening hours?")
    await say_and_wait(emu, cid, "how long does shipping take?")
    topics = [a["applyTopics"] for a in emu.actions_for(cid) if "applyTopics" in a]
    assert topics == [["ask_opening_hours"], ["ask_shipping"]]
    tracker = await get_tracker(handle.url, cid)
    assert intents(tracker)[-2:] == ["ask_opening_hours", "ask_shipping"]


async def test_buttons_survive_a_rasa_restart(start_bot: BotStarter, tmp_path: Path) -> None:
    handle = await start_bot(
        name="rasa-buttons-sqlite",
        tracker_store={"type": "SQL", "dialect": "sqlite", "db": str(tmp_path / "t.db")},
    )
    emu = handle.emulator
    cid = await _conversation(emu)
    assert await say_and_wait(emu, cid, "which plan should I pick?") == [PLANS]
    await handle.restart()
    assert await say_and_wait(emu, cid, "3") == [response_text("utter_plan_enterprise")]
