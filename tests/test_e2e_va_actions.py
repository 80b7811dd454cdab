"""Issue 12 (what a virtual agent may do) end to end, on a real ``rasa run`` with the
example bot: a rule writes the chosen plan to the contact's attributes, a response tags
the contact's message, a handoff leaves a note for the human agent; over REST (tags name
the inbound messageId) and in the webhook answer (tag names); on Hootsuite Inbox 2.0
(on by default) and on classic Sparkcentral (behind ``allow_successor_fields``)."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest_asyncio

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import get_tracker, response_text, say_and_wait, settle
from tests.support import Bot, BotStarter, RasaHandle

PLANS = response_text("utter_plans") + "\n1. Basic\n2. Pro\n3. Enterprise"
PRO = response_text("utter_plan_pro")
ENTERPRISE = response_text("utter_plan_enterprise")
HANDOFF = response_text("utter_handoff")
HANDOFF_WORDS = "I want to talk to a person"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def classic(start_bot: BotStarter) -> RasaHandle:
    """Classic Sparkcentral with the successor fields turned on."""
    return await start_bot(name="rasa-successor-classic", allow_successor_fields=True)


async def _inbox2(start_bot: BotStarter, name: str, **settings: Any) -> RasaHandle:
    emulator = await start_bot.new_emulator(platform="hootsuite", organization_id="org-12")
    return await start_bot(
        name=name,
        emulator=emulator,
        platform="hootsuite",
        organization_id="org-12",
        **settings,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def inbox2(start_bot: BotStarter) -> RasaHandle:
    """Hootsuite Inbox 2.0, replies over REST."""
    return await _inbox2(start_bot, "rasa-inbox2-actions")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def inbox2_webhook(start_bot: BotStarter) -> RasaHandle:
    """Hootsuite Inbox 2.0, replies in the webhook answer."""
    return await _inbox2(start_bot, "rasa-inbox2-webhook-actions", reply_mode="webhook")


async def _says(emu: SparkcentralEmulator, cid: str, text: str) -> tuple[str, List[str]]:
    """The contact says ``text``; (its messageId, the bot's one reply)."""
    before = len(emu.bot_texts(cid))
    result = await emu.contact_says(cid, text)
    assert result.status == 200, result.text
    assert result.message_id
    texts = await emu.wait_for_bot_messages(cid, before + 1)
    return result.message_id, texts[before:]


async def _plan_tag_and_handoff_over_rest(handle: RasaHandle) -> None:
    emu = handle.emulator
    started = await emu.start_conversation(name="Ann")
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    conversation = emu.conversation(cid)

    # a rule writes the plan the contact picked to its "plan" attribute
    assert await say_and_wait(emu, cid, "which plan should I pick?") == [PLANS]
    pro_id, replies = await _says(emu, cid, "2")
    assert replies == [PRO]
    await emu.wait_for(lambda: conversation.attributes_set == {"plan": "pro"})
    assert {"setContactAttributes": {"plan": "pro"}} in emu.actions_for(cid)

    # the enterprise answer tags the contact's message: over REST by its messageId
    enterprise_id, replies = await _says(emu, cid, "enterprise")
    assert replies == [ENTERPRISE]
    await emu.wait_for(lambda: bool(conversation.tags))
    assert enterprise_id != pro_id
    assert conversation.tags == [{"messageId": enterprise_id, "tag": "sales_lead"}]
    assert {"applyTags": [{"messageId": enterprise_id, "tag": "sales_lead"}]} in emu.actions_for(
        cid
    )

    # the handoff leaves a note naming the last message and the intent, with the completion
    _, replies = await _says(emu, cid, HANDOFF_WORDS)
    assert replies == [HANDOFF]
    await emu.wait_for_queue(cid, "new")
    last = emu.actions_for(cid)[-1]
    assert last["complete"] == "HANDOVER"
    assert last["setContactAttributes"] == {"plan": "enterprise"}
    assert [n["text"] for n in last["applyConversationNotes"]] == conversation.notes
    (note,) = conversation.notes
    assert f"- {HANDOFF_WORDS} (human_handoff)" in note
    assert "Last intent: human_handoff" in note
    assert "- enterprise (plan_enterprise)" in note
    assert "- plan: enterprise" in note
    # the platform keeps an attribute that already has a value
    assert conversation.attributes_set == {"plan": "pro"}
    assert conversation.handover_reason == "bot"
    log = handle.log_text()
    assert "Traceback" not in log and " ERROR " not in log
    assert "not sent, because allow_successor_fields is off" not in log


async def test_inbox2_attribute_tag_and_note_over_rest(inbox2: RasaHandle) -> None:
    await _plan_tag_and_handoff_over_rest(inbox2)


async def test_classic_with_successor_fields_over_rest(classic: RasaHandle) -> None:
    await _plan_tag_and_handoff_over_rest(classic)


async def test_inbox2_webhook_answer_tags_by_name_and_carries_the_note(
    inbox2_webhook: RasaHandle,
) -> None:
    emu = inbox2_webhook.emulator
    started = await emu.start_conversation(name="Ben")
    cid = started.conversation_id
    conversation = emu.conversation(cid)
    result = await emu.contact_says(cid, "which plan should I pick?")
    assert result.json == {"sendMessage": {"text": PLANS}}

    result = await emu.contact_says(cid, "enterprise")
    assert result.json == {
        "sendMessage": {"text": ENTERPRISE},
        "applyTags": ["sales_lead"],
        "setContactAttributes": {"plan": "enterprise"},
    }
    assert conversation.tags == [{"messageId": result.message_id, "tag": "sales_lead"}]
    assert conversation.attributes_set == {"plan": "enterprise"}

    result = await emu.contact_says(cid, HANDOFF_WORDS)
    answer: Dict[str, Any] = dict(result.json or {})
    assert answer.pop("sendMessage") == {"text": HANDOFF}
    assert answer.pop("complete") == "HANDOVER"
    assert answer.pop("setContactAttributes") == {"plan": "enterprise"}
    (note,) = answer.pop("applyConversationNotes")
    assert answer == {}
    assert f"- {HANDOFF_WORDS} (human_handoff)" in note["text"]
    assert "Last intent: human_handoff" in note["text"]
    assert conversation.notes == [note["text"]]
    assert conversation.queue == "new"
    # everything rode in the answers
    assert emu.calls_to(emu.api_prefix + "/virtual-agent/conversations/" + cid) == []


async def test_inbox2_message_fields_fill_the_slots(inbox2: RasaHandle) -> None:
    emu = inbox2.emulator
    started = await emu.start_conversation(name="Cem", language="nl-BE")
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    before = len(emu.bot_texts(cid))
    result = await emu.contact_says(
        cid,
        "what are your opening hours?",
        topics=["billing", "vip"],
        trigger={"type": "STORY", "action": "REPLY"},
    )
    assert result.status == 200
    await emu.wait_for_bot_messages(cid, before + 1)
    await settle(emu, cid, quiet=1.0)  # the tracker is saved after the reply
    slots = (await get_tracker(inbox2.url, cid))["slots"]
    assert slots["sparkcentral_language"] == "nl-BE"
    assert slots["sparkcentral_topics"] == ["billing", "vip"]
    assert slots["sparkcentral_trigger"] == {"type": "STORY", "action": "REPLY"}
    assert "messageId" not in slots["sparkcentral_channel_details"]

    # the next message is private: no trigger
    await say_and_wait(emu, cid, "how long does shipping take?")
    await settle(emu, cid, quiet=1.0)
    slots = (await get_tracker(inbox2.url, cid))["slots"]
    assert slots["sparkcentral_trigger"] is None


async def test_classic_without_the_setting_drops_them_with_a_warning(bot: Bot) -> None:
    emu = bot.emulator
    started = await emu.start_conversation(name="Dee")
    cid = started.conversation_id
    await emu.wait_for_bot_messages(cid, 1)
    await say_and_wait(emu, cid, "which plan should I pick?")
    assert await say_and_wait(emu, cid, "3") == [ENTERPRISE]
    await settle(emu, cid, quiet=1.0)
    conversation = emu.conversation(cid)
    assert conversation.attributes_set == {} and conversation.tags == []
    sent = {key for action in emu.actions_for(cid) for key in action}
    assert sent <= {"sendMessage", "applyTopics", "complete"}
    log = bot.rasa.log_text()
    assert "not sent, because allow_successor_fields is off" in log
    assert " ERROR " not in log
