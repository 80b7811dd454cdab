import pytest

from rasa_sparkcentral import buttons
from rasa_sparkcentral.webhook_answer import merge_answer

PLANS = buttons.normalise(
    [
        {"title": "Basic", "payload": "/plan_basic"},
        {"title": "Pro", "payload": "/plan_pro"},
        {"title": "Enterprise", "payload": '/plan_enterprise{"seats": 50}'},
        "not a button",
    ]
)


def test_render_numbered_list() -> None:
    assert buttons.render("Which plan?", PLANS) == "Which plan?\n1. Basic\n2. Pro\n3. Enterprise"
    assert buttons.render(None, PLANS[:1]) == "1. Basic"


@pytest.mark.parametrize(
    ("answer", "payload"),
    [
        ("2", "/plan_pro"),
        (" 2. ", "/plan_pro"),
        ("3)", '/plan_enterprise{"seats": 50}'),
        ("  pRo ", "/plan_pro"),
        ("ENTERPRISE", '/plan_enterprise{"seats": 50}'),
        ("4", None),
        ("0", None),
        ("pro plan please", None),
        ("", None),
        (None, None),
    ],
)
def test_match(answer: "str | None", payload: "str | None") -> None:
    assert buttons.match(answer, PLANS) == payload


def test_quick_reply_without_payload_uses_title() -> None:
    assert buttons.normalise([{"title": "Yes"}]) == [{"title": "Yes", "payload": "Yes"}]


def test_merge_single_message_with_handover() -> None:
    answer, rest = merge_answer(
        [{"sendMessage": {"text": "bye"}}, {"complete": "HANDOVER", "applyTopics": ["vip"]}],
        can_use_rest=True,
        allow_successor_fields=False,
    )
    assert answer == {
        "sendMessage": {"text": "bye"},
        "applyTopics": ["vip"],
        "complete": "HANDOVER",
    }
    assert rest == []


def test_merge_several_messages_rest_carries_completion_last() -> None:
    answer, rest = merge_answer(
        [{"sendMessage": {"text": "a"}}, {"sendMessage": {"text": "b"}}, {"complete": "RESOLVED"}],
        can_use_rest=True,
        allow_successor_fields=False,
    )
    assert answer == {"sendMessage": {"text": "a"}}
    assert rest == [{"sendMessage": {"text": "b"}, "complete": "RESOLVED"}]


def test_merge_without_rest_joins_texts() -> None:
    bodies = [{"sendMessage": {"text": "a"}}, {"sendMessage": {"text": "b"}}]
    answer, rest = merge_answer(bodies, can_use_rest=False, allow_successor_fields=False)
    assert answer == {"sendMessage": {"text": "a\n\nb"}} and rest == []
    answer, _ = merge_answer(bodies, can_use_rest=False, allow_successor_fields=True)
    assert answer == {"sendMessages": [{"text": "a"}, {"text": "b"}]}
    assert merge_answer([], can_use_rest=True, allow_successor_fields=False) == ({}, [])
