import json

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
