"""The dialog designer's actions and slots (issue 12), run through rasa_sdk's executor:
slots from what a message says, slots written to the contact's attributes, and the note a
handoff leaves for the human agent."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk.executor import ActionExecutor

import rasa_sparkcentral.actions as actions
from rasa_sparkcentral.protocol import METADATA_KEY

DETAILS = {
    "conversationId": "conv-1",
    "channelId": "chan-1",
    "channelName": "Demo Channel",
    "medium": "instagram",
    "contactProfile": {"id": "contact-1", "primaryIdentifier": "@ann", "vip": False},
    "contactAttributes": [{"attribute": "plan", "value": "basic", "source": "AGENT"}],
    "language": "nl",
}
MESSAGE = {
    "messageId": "m-1",
    "payload": "/plan_pro",
    "topics": ["billing", "vip"],
    "trigger": {"type": "STORY", "action": "REPLY"},
}
NEW_SLOTS = {
    name: {"type": "any"}
    for name in ("sparkcentral_language", "sparkcentral_topics", "sparkcentral_trigger")
}
PLAN_DOMAIN_SLOTS: Dict[str, Any] = {
    "plan": {"type": "text", "initial_value": None},
    "seats": {"type": "float", "initial_value": None},
    "newsletter": {"type": "bool", "initial_value": False},
    "sparkcentral_contact_attribute_map": {"type": "any"},
    "sparkcentral_vip": {"type": "bool", "initial_value": False},
}


def _user(text: str, intent: str) -> Dict[str, Any]:
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}}


def _call(
    name: str,
    *,
    metadata: Optional[Dict[str, Any]] = None,
    slots: Optional[Dict[str, Any]] = None,
    domain: Optional[Dict[str, Any]] = None,
    events: Optional[List[Dict[str, Any]]] = None,
    text: str = "hi",
    intent: str = "greet",
) -> Dict[str, Any]:
    return {
        "next_action": name,
        "sender_id": "conv-1",
        "tracker": {
            "sender_id": "conv-1",
            "slots": slots or {},
            "latest_message": {
                "text": text,
                "intent": {"name": intent},
                "metadata": metadata or {},
            },
            "events": events or [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
        "domain": domain or {},
    }


async def run_action(executor: ActionExecutor, call: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``executor.run`` as a dict (rasa-sdk >= 3.11 returns a pydantic result)."""
    result = await executor.run(call)
    if result is None or isinstance(result, dict):
        return result
    dumped: Dict[str, Any] = result.model_dump(by_alias=True)
    return dumped


@pytest.fixture(scope="module")
def executor() -> ActionExecutor:
    ex = ActionExecutor()
    ex.register_package("rasa_sparkcentral.actions")
    return ex


def _custom(result: Any) -> List[Dict[str, Any]]:
    return [r["custom"] for r in result["responses"] if r.get("custom")]


# -- slots from the message ------------------------------------------------------------


async def test_message_fields_fill_the_new_slots(executor: ActionExecutor) -> None:
    result = await run_action(
        executor,
        _call(
            "action_sparkcentral_channel_details",
            metadata={METADATA_KEY: {**DETAILS, **MESSAGE}},
            domain={"slots": {**NEW_SLOTS, "sparkcentral_channel_details": {}}},
        ),
    )
    assert result is not None
    slots = {e["name"]: e["value"] for e in result["events"]}
    assert slots["sparkcentral_language"] == "nl"
    assert slots["sparkcentral_topics"] == ["billing", "vip"]
    assert slots["sparkcentral_trigger"] == {"type": "STORY", "action": "REPLY"}
    # the whole details stay the conversation's: no per-message keys in them
    assert slots["sparkcentral_channel_details"] == DETAILS


async def test_message_fields_count_even_when_the_details_were_lost(
    executor: ActionExecutor,
) -> None:
    block = {"conversationId": "conv-1", "trigger": None, "conversationTopics": ["sales"]}
    result = await run_action(
        executor,
        _call(
            "action_sparkcentral_channel_details",
            metadata={METADATA_KEY: block},
            domain={"slots": {**NEW_SLOTS, "sparkcentral_vip": {}}},
            slots={"sparkcentral_trigger": {"type": "POST", "action": "MENTION"}},
        ),
    )
    assert result is not None
    # a private message answers no post: the trigger slot follows the latest message
    assert {e["name"]: e["value"] for e in result["events"]} == {
        "sparkcentral_topics": ["sales"],
        "sparkcentral_trigger": None,
    }


def test_message_slots_leave_out_what_the_block_does_not_say() -> None:
    assert actions.message_slots({"conversationId": "c"}) == {}
    assert actions.message_slots({"language": "", "topics": "x"}) == {}


# -- slots to contact attributes ---------------------------------------------------------


def test_parse_attribute_map_spellings() -> None:
    assert actions.parse_attribute_map({"plan": "subscription_plan", "x": None}) == {
        "plan": "subscription_plan"
    }
    assert actions.parse_attribute_map("plan:subscription_plan, seats ,") == {
        "plan": "subscription_plan",
        "seats": "seats",
    }
    assert actions.parse_attribute_map(["plan", "city:home_city"]) == {
        "plan": "plan",
        "city": "home_city",
    }
    assert actions.parse_attribute_map(None) == {}


async def test_set_attributes_from_the_domain_map(executor: ActionExecutor) -> None:
    slots = {
        "plan": "pro",
        "seats": 3.0,
        "newsletter": True,
        "sparkcentral_contact_attribute_map": {
            "plan": "subscription_plan",
            "seats": "seats",
            "newsletter": "newsletter",
            "missing": "nothing",
        },
    }
    result = await run_action(
        executor,
        _call(
            "action_set_sparkcentral_contact_attributes",
            slots=slots,
            domain={"slots": PLAN_DOMAIN_SLOTS},
        ),
    )
    assert result is not None
    assert _custom(result) == [
        {
            "setContactAttributes": {
                "subscription_plan": "pro",
                "seats": "3.0",
                "newsletter": "true",
            }
        }
    ]
    assert result["events"] == []


async def test_set_attributes_from_the_environment_skips_known_values(
    executor: ActionExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKCENTRAL_CONTACT_ATTRIBUTES", "plan, seats:seat_count")
    slots = {
        "plan": "basic",
        "seats": 5,
        "sparkcentral_contact_attributes": {"plan": "basic"},
    }
    result = await run_action(
        executor, _call("action_set_sparkcentral_contact_attributes", slots=slots, domain={})
    )
    assert result is not None
    assert _custom(result) == [{"setContactAttributes": {"seat_count": "5"}}]


async def test_set_attributes_warns_on_bad_names_and_missing_map(
    executor: ActionExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    slots = {
        "plan": "pro",
        "seats": 2,
        "sparkcentral_contact_attribute_map": {"plan": "plan-name", "seats": "seats"},
    }
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        result = await run_action(
            executor,
            _call(
                "action_set_sparkcentral_contact_attributes",
                slots=slots,
                domain={"slots": PLAN_DOMAIN_SLOTS},
            ),
        )
    assert result is not None
    assert _custom(result) == [{"setContactAttributes": {"seats": "2"}}]
    assert any("'plan-name'" in r.getMessage() for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        result = await run_action(
            executor, _call("action_set_sparkcentral_contact_attributes", slots={"plan": "pro"})
        )
    assert result is not None and result["responses"] == []
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "sparkcentral_contact_attribute_map" in warning
    assert "SPARKCENTRAL_CONTACT_ATTRIBUTES" in warning


# -- the handoff note ------------------------------------------------------------------

CONVERSATION = [
    {"event": "restart"},
    _user("/restart", "restart"),
    _user("/greet", "greet"),
    _user("which plan should I pick?", "choose_plan"),
    _user("/plan_pro", "plan_pro"),
    _user("my invoice is wrong, I was charged twice", "ask_billing"),
    _user("I want to talk to a person", "human_handoff"),
]


async def test_handoff_leaves_a_note_then_hands_over(executor: ActionExecutor) -> None:
    domain = {"responses": {"utter_handoff": [{"text": "bye"}]}, "slots": PLAN_DOMAIN_SLOTS}
    result = await run_action(
        executor,
        _call(
            "action_handoff_to_sparkcentral",
            domain=domain,
            events=CONVERSATION,
            slots={"plan": "pro", "newsletter": False, "sparkcentral_vip": True},
            text="I want to talk to a person",
            intent="human_handoff",
        ),
    )
    assert result is not None
    assert [r.get("response") for r in result["responses"]] == ["utter_handoff", None]
    (payload,) = _custom(result)
    assert list(payload) == ["applyConversationNotes", "complete"]
    assert payload["complete"] == "HANDOVER"
    (note,) = payload["applyConversationNotes"]
    assert note["text"] == "\n".join(
        [
            "Handed over by the virtual agent (Rasa). What it learned:",
            "Last intent: human_handoff",
            "The contact's last messages:",
            "- which plan should I pick? (choose_plan)",
            "- my invoice is wrong, I was charged twice (ask_billing)",
            "- I want to talk to a person (human_handoff)",
            "Known so far:",
            "- plan: pro",
        ]
    )
    assert [e["event"] for e in result["events"]] == ["pause", "action"]


async def test_note_is_bounded_and_its_slots_and_length_configurable(
    executor: ActionExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARKCENTRAL_HANDOFF_NOTE_MESSAGES", "1")
    monkeypatch.setenv("SPARKCENTRAL_HANDOFF_NOTE_SLOTS", "seats, newsletter")
    long_text = "word " * 100
    events = [*CONVERSATION, _user(long_text, "human_handoff")]
    result = await run_action(
        executor,
        _call(
            "action_handoff_to_sparkcentral",
            domain={"slots": PLAN_DOMAIN_SLOTS},
            events=events,
            slots={"plan": "pro", "seats": 12, "newsletter": False},
            intent="human_handoff",
        ),
    )
    assert result is not None
    (payload,) = _custom(result)
    text = payload["applyConversationNotes"][0]["text"]
    lines = text.splitlines()
    quoted = [line for line in lines if line.startswith("- word")]
    assert len(quoted) == 1 and len(quoted[0]) <= 2 + 200 + len(" (human_handoff)")
    assert quoted[0].endswith("… (human_handoff)")
    assert "which plan" not in text and "plan: pro" not in text
    assert lines[-2:] == ["- seats: 12", "- newsletter: no"]


async def test_note_can_be_turned_off_and_resolve_leaves_none(
    executor: ActionExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = _call("action_resolve_conversation", events=CONVERSATION, slots={"plan": "pro"})
    result = await run_action(executor, call)
    assert result is not None and _custom(result) == [{"complete": "RESOLVED"}]
    monkeypatch.setenv("SPARKCENTRAL_HANDOFF_NOTE", "off")
    result = await run_action(
        executor,
        _call("action_handoff_to_sparkcentral", events=CONVERSATION, slots={"plan": "pro"}),
    )
    assert result is not None and _custom(result) == [{"complete": "HANDOVER"}]


async def test_handoff_writes_mapped_attributes_with_the_completion(
    executor: ActionExecutor,
) -> None:
    slots = {"plan": "enterprise", "sparkcentral_contact_attribute_map": {"plan": "plan"}}
    result = await run_action(
        executor,
        _call(
            "action_handoff_to_sparkcentral",
            domain={"slots": PLAN_DOMAIN_SLOTS},
            slots=slots,
            events=CONVERSATION,
        ),
    )
    assert result is not None
    (payload,) = _custom(result)
    assert payload["setContactAttributes"] == {"plan": "enterprise"}
    assert "- plan: enterprise" in payload["applyConversationNotes"][0]["text"]
    assert list(payload)[-1] == "complete"
