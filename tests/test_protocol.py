import json
from typing import Optional

import pytest

from rasa_sparkcentral.protocol import (
    ChannelDetails,
    ProtocolError,
    action_body,
    action_from_custom,
    parse_event,
)

STARTED = {
    "timestamp": "2019-02-20T10:28:57.229144Z",
    "idempotencyKey": "36bce710-87d1-4b4c-9299-c873c34fac64",
    "version": 1,
    "type": "CONVERSATION_STARTED",
    "data": {
        "conversationId": "0-01e67a8c216-000-8c9ea98e",
        "contactProfile": {
            "id": "0-01e639d0a57-000-516b9710",
            "mediumContactProfileId": "2853168558034488",
            "primaryIdentifier": "Johan",
            "secondaryIdentifier": "",
            "pictureUrl": "https://example.invalid/p.png",
            "vip": False,
            "profileUrl": "https://example.invalid/johan",
        },
        "contactAttributes": [
            {"attribute": "smooch-rtm-browser-language", "value": "en-GB", "source": "MEDIUM"}
        ],
        "medium": {"id": "smooch-rtm"},
        "channel": {"id": "0-01c6421333d-000-4a29abb0", "name": "Demo Channel"},
    },
}


def _bytes(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_conversation_started_details() -> None:
    event = parse_event(_bytes(STARTED))
    assert event.known and event.conversation_id == "0-01e67a8c216-000-8c9ea98e"
    assert event.idempotency_key == "36bce710-87d1-4b4c-9299-c873c34fac64"
    details = ChannelDetails.from_event(event).to_dict()
    assert details["channelId"] == "0-01c6421333d-000-4a29abb0"
    assert details["channelName"] == "Demo Channel"
    assert details["medium"] == "smooch-rtm"
    # unknown profile fields pass through
    assert details["contactProfile"]["profileUrl"] == "https://example.invalid/johan"
    assert details["contactAttributes"][0]["value"] == "en-GB"
    assert ChannelDetails.from_dict(details).to_dict() == details


def test_inbound_message_text() -> None:
    body = {
        "type": "INBOUND_MESSAGE_RECEIVED",
        "idempotencyKey": "k",
        "data": {"conversationId": "c1", "message": {"text": "Hello"}},
    }
    event = parse_event(_bytes(body))
    assert event.text == "Hello"
    body["data"]["message"] = {"attachment": {"url": "x"}}
    assert parse_event(_bytes(body)).text is None


def test_unknown_event_type_parses_without_conversation() -> None:
    event = parse_event(_bytes({"type": "SOMETHING_NEW", "data": {"x": 1}}))
    assert not event.known


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'"text"',
        b"\xff\xfe",
        _bytes({"data": {"conversationId": "c"}}),
        _bytes({"type": "", "data": {}}),
        _bytes({"type": "INBOUND_MESSAGE_RECEIVED", "data": {}}),
        _bytes({"type": "INBOUND_MESSAGE_RECEIVED", "data": {"conversationId": 5}}),
        _bytes({"type": "INBOUND_MESSAGE_RECEIVED", "data": {"conversationId": "  "}}),
        _bytes({"type": "CONVERSATION_STARTED", "data": []}),
        _bytes({"type": "INBOUND_MESSAGE_RECEIVED", "data": {"conversationId": "c", "message": 3}}),
        _bytes({"type": "X", "idempotencyKey": 5, "data": {}}),
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_event(raw)


def test_action_body() -> None:
    assert action_body() == {}
    assert action_body(text="hi", topics=["a"], complete="HANDOVER") == {
        "sendMessage": {"text": "hi"},
        "applyTopics": ["a"],
        "complete": "HANDOVER",
    }
    with pytest.raises(ValueError):
        action_body(complete="DONE")


def test_action_from_custom_filters_fields() -> None:
    custom = {
        "complete": "RESOLVED",
        "applyTopics": "billing",
        "other": 1,
        "indicateTyping": "START",
    }
    assert action_from_custom(custom, allow_successor_fields=False) == {
        "complete": "RESOLVED",
        "applyTopics": ["billing"],
    }
    assert action_from_custom(custom, allow_successor_fields=True)["indicateTyping"] == "START"
    assert action_from_custom({"applyTopics": []}, allow_successor_fields=False) == {}
    with pytest.raises(ValueError):
        action_from_custom({"complete": "nope"}, allow_successor_fields=False)
    with pytest.raises(ValueError):
        action_from_custom({"applyTopics": [1]}, allow_successor_fields=False)


def test_inbox2_inbound_fields() -> None:
    body = json.dumps(
        {
            "timestamp": "2022-04-28T09:43:26.635984618Z",
            "idempotencyKey": "k1",
            "version": 1,
            "type": "INBOUND_MESSAGE_RECEIVED",
            "data": {
                "conversationId": "c1",
                "message": {"messageId": "m1", "text": "Pro", "payload": "/plan_pro"},
                "trigger": {"type": "STORY", "action": "REPLY"},
                "conversationTopics": ["billing", 7],
                "language": "nl",
                "channel": {"id": "ch2", "name": "Insta"},
                "medium": {"id": "instagram"},
            },
        },
        indent=2,
    ).encode()
    event = parse_event(body)
    assert event.message_id == "m1" and event.payload == "/plan_pro" and event.text == "Pro"
    assert event.trigger == {"type": "STORY", "action": "REPLY"}
    assert event.topics == ["billing"] and event.language == "nl"
    assert event.sent_at is not None and abs(event.sent_at - 1651139006.635984618) < 1e-5
    before = ChannelDetails(
        conversation_id="c1", channel_id="ch1", medium="facebook", contact_profile={"id": "p"}
    )
    after = before.refreshed(event)
    assert (after.channel_id, after.channel_name, after.medium) == ("ch2", "Insta", "instagram")
    assert after.contact_profile == {"id": "p"} and after.language == "nl"
    assert before.channel_id == "ch1"  # refreshed() returns a copy
    assert ChannelDetails.from_dict(after.to_dict()) == after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-02-20T10:29:10.238188Z", 1550658550.238188),
        ("2019-02-20T10:29:10Z", 1550658550.0),
        ("2019-02-20T12:29:10.5+02:00", 1550658550.5),
        ("2019-02-20T10:29:10.5", 1550658550.5),
        ("2019-02-30T10:29:10Z", None),
        ("yesterday", None),
    ],
)
def test_timestamps(text: str, expected: Optional[float]) -> None:
    from rasa_sparkcentral.protocol import parse_timestamp

    result = parse_timestamp(text)
    if expected is None:
        assert result is None
    else:
        assert result is not None and abs(result - expected) < 1e-6


def test_successor_fields_are_checked() -> None:
    body = action_from_custom(
        {
            "applyTags": "vip",
            "applyConversationNotes": "asked for a refund",
            "setContactAttributes": {"plan": "pro", "seats": 3, "gone": None},
            "indicateTyping": "START",
        },
        allow_successor_fields=True,
    )
    assert body == {
        "applyTags": ["vip"],
        "applyConversationNotes": [{"text": "asked for a refund"}],
        "setContactAttributes": {"plan": "pro", "seats": "3"},
        "indicateTyping": "START",
    }
    with pytest.raises(ValueError, match="'plan name'"):
        action_from_custom(
            {"setContactAttributes": {"plan name": "x"}}, allow_successor_fields=True
        )
    with pytest.raises(ValueError, match="indicateTyping"):
        action_from_custom({"indicateTyping": "maybe"}, allow_successor_fields=True)
    with pytest.raises(ValueError, match="applyConversationNotes"):
        action_from_custom({"applyConversationNotes": [{"x": 1}]}, allow_successor_fields=True)
    rest_tags = action_from_custom(
        {"applyTags": [{"messageId": "m1", "tag": "vip"}]}, allow_successor_fields=True
    )
    assert rest_tags == {"applyTags": [{"messageId": "m1", "tag": "vip"}]}
    # classic Sparkcentral without the setting: none of them
    assert action_from_custom({"applyTags": ["vip"]}, allow_successor_fields=False) == {}
