"""Issue 4: handoff to Sparkcentral's agent queue, resolve, and resume when handed back."""

from __future__ import annotations

import logging

from tests.helpers import get_tracker, response_text, say_and_wait, settle, user_texts
from tests.support import Bot

CONVERSATION_PATH = "/virtual-agent/conversations/"


async def _handed_over(bot: Bot) -> str:
    emu = bot.emulator
    started = await emu.start_conversation(name="Marie")
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    replies = await say_and_wait(emu, cid, "I want to talk to a person")
    assert replies == [response_text("utter_handoff")]
    await emu.wait_for_queue(cid, "new")
    return str(cid)


async def test_handoff_says_goodbye_then_hands_over(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _handed_over(bot)
    actions = emu.actions_for(cid)
    # the goodbye arrives before the HANDOVER, as separate calls, in that order
    assert actions[-2] == {"sendMessage": {"text": response_text("utter_handoff")}}
    assert actions[-1] == {"complete": "HANDOVER"}
    assert emu.conversations[cid].queue == "new"


async def test_after_handoff_the_bot_stays_silent(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _handed_over(bot)
    count = len(emu.actions_for(cid))
    calls = len(emu.calls_to(CONVERSATION_PATH + cid))
    # a late delivery (Sparkcentral would not send it, but the bot must cope)
    result = await emu.contact_says(cid, "what are your opening hours?", force=True)
    assert result.status == 200
    await settle(emu, cid, quiet=1.0)
    assert len(emu.actions_for(cid)) == count
    assert len(emu.calls_to(CONVERSATION_PATH + cid)) == calls
    tracker = await get_tracker(bot.rasa.url, cid)
    assert tracker["paused"] is True
    assert user_texts(tracker)[-1] == "what are your opening hours?"
    log = bot.rasa.log_text()
    assert "Traceback" not in log and " ERROR " not in log


async def test_handed_back_conversation_starts_fresh(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _handed_over(bot)
    emu.agent_says(cid, "Hi Marie, this is Tom from support. All sorted, back to the bot!")
    before = len(emu.bot_texts(cid))
    result = await emu.hand_back(cid)
    assert result.status == 200
    texts = await emu.wait_for_bot_messages(cid, before + 1)
    assert texts[before:] == [response_text("utter_greet")]
    assert await say_and_wait(emu, cid, "how long does shipping take?") == [
        response_text("utter_shipping")
    ]
    tracker = await get_tracker(bot.rasa.url, cid)
    assert tracker["paused"] is False
    # a fresh session: what was said before the handoff is behind a restart, and the
    # conversation goes on from a new session that began with the greeting
    events = [(e["event"], e.get("name") or e.get("text")) for e in tracker["events"]]
    assert events[:4] == [
        ("action", "action_session_start"),
        ("session_started", None),
        ("action", "action_listen"),
        ("user", "/greet"),
    ]
    assert "I want to talk to a person" not in user_texts(tracker)


async def test_delegated_conversation_is_treated_like_a_start(bot: Bot) -> None:
    emu = bot.emulator
    cid = await _handed_over(bot)
    before = len(emu.bot_texts(cid))
    result = await emu.hand_back(cid, event_type="CONVERSATION_DELEGATED")
    assert result.status == 200
    texts = await emu.wait_for_bot_messages(cid, before + 1)
    assert texts[before:] == [response_text("utter_greet")]
    assert emu.conversations[cid].queue == "bot"


async def test_resolve_rule_ends_the_conversation(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    replies = await say_and_wait(emu, cid, "that's all, you can close this conversation")
    assert replies == [response_text("utter_resolved")]
    await emu.wait_for_queue(cid, "resolved")
    assert emu.actions_for(cid)[-1] == {"complete": "RESOLVED"}


async def test_conversation_taken_by_an_agent_gets_one_info_log(bot: Bot) -> None:
    """A human agent takes the conversation in the inbox while the bot still answers:
    Sparkcentral answers 404; the channel drops the reply without retry or error."""
    emu = bot.emulator
    started = await emu.start_conversation()
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    emu.conversations[cid].queue = "new"
    before = len(emu.calls_to(CONVERSATION_PATH + cid))
    result = await emu.contact_says(cid, "what are your opening hours?", force=True)
    assert result.status == 200
    await emu.wait_for(lambda: len(emu.calls_to(CONVERSATION_PATH + cid)) > before)
    await settle(emu, cid, quiet=1.0)
    late = emu.calls_to(CONVERSATION_PATH + cid)[before:]
    assert [c.status for c in late] == [404]
    log = bot.rasa.log_text()
    gone = [line for line in log.splitlines() if cid in line and "no longer assigned" in line]
    assert len(gone) == 1 and " INFO " in gone[0]
    assert logging.getLevelName(logging.ERROR) not in "".join(
        line for line in log.splitlines() if cid in line
    )
