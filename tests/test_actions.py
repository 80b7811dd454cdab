"""Our rasa_sdk actions, run through rasa_sdk's own executor (the action server's code path)."""

from typing import Any, Dict, Optional

import pytest
from rasa_sdk.executor import ActionExecutor

import rasa_sparkcentral.actions as actions
from rasa_sparkcentral.protocol import METADATA_KEY

DETAILS = {
    "conversationId": "conv-1",
    "channelId": "chan-1",
    "channelName": "Demo Channel",
    "medium": "twit",
    "contactProfile": {
        "id": "contact-1",
        "mediumContactProfileId": "123",
        "primaryIdentifier": "@johan",
        "secondaryIdentifier": "Johan",
        "pictureUrl": "https://example.invalid/p.png",
        "vip": True,
    },
    "contactAttributes": [
        {"attribute": "fb-locale", "value": "nl_BE", "source": "MEDIUM"},
        {"attribute": "fb-timezone", "value": "2", "source": "MEDIUM"},
    ],
}
ALL_SLOTS = {name: {"type": "any"} for name in actions.channel_details_slots(DETAILS)}


def _call(
    name: str,
    *,
    metadata: Optional[Dict[str, Any]] = None,
    slots: Optional[Dict[str, Any]] = None,
    domain: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    return {
        "next_action": name,
        "sender_id": "conv-1",
        "tracker": {
            "sender_id": "conv-1",
            "slots": slots or {},
            "latest_message": {
                "text": "hi",
                "intent": {"name": "greet"},
                "metadata": metadata or {},
            },
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
        "domain": domain or {},
    }


async def run_action(executor: ActionExecutor, call: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """``executor.run`` as a dict: rasa-sdk < 3.11 returns one, newer rasa-sdk (the Rasa Pro
    line) a pydantic ``ActionExecutorRunResult`` with the same fields."""
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


def test_only_concrete_actions_are_registered(executor: ActionExecutor) -> None:
    names = set(executor.actions)
    assert {
        "action_handoff_to_sparkcentral",
        "action_resolve_conversation",
        "action_sparkcentral_channel_details",
    } <= names


async def test_handoff_says_goodbye_then_hands_over_and_pauses(executor: ActionExecutor) -> None:
    domain = {"responses": {"utter_handoff": [{"text": "bye"}]}, "slots": {}}
    result = await run_action(executor, _call("action_handoff_to_sparkcentral", domain=domain))
    assert result is not None
    assert [r.get("response") for r in result["responses"]] == ["utter_handoff", None]
    assert result["responses"][1]["custom"] == {"complete": "HANDOVER"}
    assert [e["event"] for e in result["events"]] == ["pause", "action"]
    assert result["events"][1]["name"] == "action_listen"


async def test_handoff_without_response_and_with_topic_slot(executor: ActionExecutor) -> None:
    domain = {"responses": {}, "slots": {"sparkcentral_handoff_topics": {"type": "list"}}}
    call = _call(
        "action_handoff_to_sparkcentral",
        domain=domain,
        slots={"sparkcentral_handoff_topics": ["billing", " vip "]},
    )
    result = await run_action(executor, call)
    assert result is not None
    assert [r["custom"] for r in result["responses"]] == [
        {"complete": "HANDOVER", "applyTopics": ["billing", "vip"]}
    ]


async def test_topics_from_environment(executor: ActionExecutor, monkeypatch) -> None:
    monkeypatch.setenv("SPARKCENTRAL_HANDOFF_TOPICS", "escalation, chatbot")
    result = await run_action(executor, _call("action_resolve_conversation"))
    assert result is not None
    assert result["responses"][-1]["custom"] == {
        "complete": "RESOLVED",
        "applyTopics": ["escalation", "chatbot"],
    }


async def test_channel_details_fill_declared_slots(executor: ActionExecutor) -> None:
    result = await run_action(
        executor,
        _call(
            "action_sparkcentral_channel_details",
            metadata={METADATA_KEY: DETAILS},
            domain={"slots": ALL_SLOTS},
        ),
    )
    assert result is not None
    slots = {e["name"]: e["value"] for e in result["events"]}
    assert slots["sparkcentral_medium"] == "twit"
    assert slots["sparkcentral_vip"] is True
    assert slots["sparkcentral_primary_identifier"] == "@johan"
    assert slots["sparkcentral_contact_attributes"] == {"fb-locale": "nl_BE", "fb-timezone": "2"}
    assert slots["sparkcentral_channel_details"] == DETAILS


async def test_channel_details_skip_undeclared_and_unchanged(executor: ActionExecutor) -> None:
    domain = {"slots": {"sparkcentral_vip": {}, "sparkcentral_medium": {}}}
    call = _call(
        "action_sparkcentral_channel_details",
        metadata={METADATA_KEY: DETAILS},
        domain=domain,
        slots={"sparkcentral_vip": True},
    )
    result = await run_action(executor, call)
    assert result is not None
    assert result["events"] == [
        {"event": "slot", "timestamp": None, "name": "sparkcentral_medium", "value": "twit"}
    ]


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {METADATA_KEY: "x"}, {METADATA_KEY: {"conversationId": "conv-1"}}],
)
async def test_channel_details_without_profile_keep_slots(
    executor: ActionExecutor, metadata: Any
) -> None:
    call = _call(
        "action_sparkcentral_channel_details", metadata=metadata, domain={"slots": ALL_SLOTS}
    )
    result = await run_action(executor, call)
    assert result is not None and result["events"] == []


def _user_event(block: Dict[str, Any]) -> Dict[str, Any]:
    return {"event": "user", "text": "x", "metadata": {METADATA_KEY: block}, "parse_data": {}}


SLIM = {"conversationId": "conv-1", "messageId": "m-9", "topics": [], "trigger": None}


async def test_a_message_without_details_fills_the_slots_from_the_latest_that_had_them(
    executor: ActionExecutor,
) -> None:
    """Only messages whose details are new to Rasa carry them: after a restart or a new
    session cleared the slots, the details come from the latest earlier message."""
    older = {**DETAILS, "medium": "sms"}
    message_slots = {"sparkcentral_topics": {}, "sparkcentral_trigger": {}}
    call = _call(
        "action_sparkcentral_channel_details",
        metadata={METADATA_KEY: SLIM},
        domain={"slots": {**ALL_SLOTS, **message_slots}},
        slots={"sparkcentral_trigger": {"type": "POST", "action": "REPLY"}},
    )
    call["tracker"]["events"] = [
        _user_event(older),
        _user_event(DETAILS),
        {"event": "restart"},
        _user_event(SLIM),
    ]
    result = await run_action(executor, call)
    assert result is not None
    slots = {e["name"]: e["value"] for e in result["events"]}
    assert slots["sparkcentral_medium"] == "twit"  # the latest, not the older
    assert slots["sparkcentral_vip"] is True
    assert slots["sparkcentral_channel_details"] == DETAILS
    assert slots["sparkcentral_topics"] == [] and slots["sparkcentral_trigger"] is None


async def test_a_message_without_details_changes_no_slot_that_holds_them(
    executor: ActionExecutor,
) -> None:
    held = actions.channel_details_slots(DETAILS)
    call = _call(
        "action_sparkcentral_channel_details",
        metadata={METADATA_KEY: SLIM},
        domain={"slots": ALL_SLOTS},
        slots={**held, "sparkcentral_topics": [], "sparkcentral_trigger": None},
    )
    call["tracker"]["events"] = [_user_event(DETAILS), _user_event(SLIM)]
    result = await run_action(executor, call)
    assert result is not None and result["events"] == []


def test_channel_details_reads_the_current_message_first() -> None:
    from rasa_sdk import Tracker

    def tracker(latest: Dict[str, Any], events: Any) -> Tracker:
        return Tracker(
            "conv-1", {}, {"metadata": {METADATA_KEY: latest}}, events, False, None, {}, ""
        )

    newer = {**DETAILS, "channelName": "Renamed"}
    assert actions.channel_details(tracker(newer, [_user_event(DETAILS)])) == newer
    assert actions.channel_details(tracker(SLIM, [_user_event(DETAILS), _user_event(SLIM)])) == (
        DETAILS
    )
    assert actions.channel_details(tracker(SLIM, [_user_event(SLIM)])) is None


def _slot_event(name: str, value: Any) -> Dict[str, Any]:
    return {"event": "slot", "name": name, "value": value}


async def test_after_a_second_restart_the_details_come_back_from_the_slot_events(
    executor: ActionExecutor,
) -> None:
    """The session before the restart got its details back from slot events only (the
    action refilled them after an earlier restart): they come back from those."""
    recovered = actions.channel_details_slots(DETAILS)
    call = _call(
        "action_sparkcentral_channel_details",
        metadata={METADATA_KEY: SLIM},
        domain={"slots": ALL_SLOTS},
    )
    call["tracker"]["events"] = [
        {"event": "session_started"},
        _user_event(SLIM),
        *[_slot_event(name, value) for name, value in recovered.items()],
        {"event": "restart"},
        {"event": "session_started"},
        _user_event(SLIM),
    ]
    result = await run_action(executor, call)
    assert result is not None
    assert {e["name"]: e["value"] for e in result["events"]} == recovered


async def test_without_the_whole_details_slot_each_slot_comes_back_on_its_own(
    executor: ActionExecutor,
) -> None:
    """A bot declaring only some details slots (not the whole object) gets each back from
    its latest slot event, where Rasa reset it to the slot's initial value."""
    domain = {
        "slots": {
            "sparkcentral_vip": {"type": "bool", "initial_value": False},
            "sparkcentral_medium": {"type": "text"},
            "sparkcentral_primary_identifier": {"type": "text"},
        }
    }
    call = _call(
        "action_sparkcentral_channel_details",
        metadata={METADATA_KEY: SLIM},
        domain=domain,
        slots={"sparkcentral_vip": False, "sparkcentral_primary_identifier": "Ann"},
    )
    call["tracker"]["events"] = [
        _slot_event("sparkcentral_medium", "sms"),
        _slot_event("sparkcentral_medium", "twit"),
        _slot_event("sparkcentral_vip", True),
        _slot_event("sparkcentral_primary_identifier", "@johan"),
        {"event": "restart"},
        _slot_event("sparkcentral_primary_identifier", "Ann"),  # set by the bot since
        _user_event(SLIM),
    ]
    result = await run_action(executor, call)
    assert result is not None
    assert {e["name"]: e["value"] for e in result["events"]} == {
        "sparkcentral_medium": "twit",
        "sparkcentral_vip": True,
    }


def test_channel_details_reads_the_whole_details_slot_where_no_message_carries_them() -> None:
    from rasa_sdk import Tracker

    def tracker(events: Any, slots: Dict[str, Any]) -> Tracker:
        return Tracker(
            "conv-1", slots, {"metadata": {METADATA_KEY: SLIM}}, events, False, None, {}, ""
        )

    whole = actions.channel_details_slots(DETAILS)["sparkcentral_channel_details"]
    older = _slot_event("sparkcentral_channel_details", {**whole, "medium": "sms"})
    newer = _slot_event("sparkcentral_channel_details", whole)
    assert actions.channel_details(tracker([older, newer], {})) == whole
    # a message that carried them after the slot event is newer still
    assert actions.channel_details(tracker([newer, _user_event(DETAILS)], {})) == DETAILS
    held = {"sparkcentral_channel_details": whole}
    assert actions.channel_details(tracker([_user_event(SLIM)], held)) == whole
    assert actions.channel_details(tracker([_user_event(SLIM)], {})) is None
