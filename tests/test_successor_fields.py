"""Everything a virtual agent may send besides messages, topics and completion (tags,
notes, contact attributes, several messages, typing): from the top level of a bot
message, a response's ``custom`` or ``metadata``, to the bodies the output writes, the
REST shape of tags, and the webhook answer's merge."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List

import pytest

from rasa_sparkcentral import output as output_module
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.output import RestSink, SparkcentralOutput, tags_for_rest
from rasa_sparkcentral.state import make_state
from rasa_sparkcentral.testing.emulator import DEFAULT_SHARED_SECRET
from rasa_sparkcentral.webhook_answer import WebhookAnswer, merge_answer


class Recorder:
    """A sink that keeps the bodies the output writes (the webhook answer's role)."""

    def __init__(self) -> None:
        self.bodies: List[Dict[str, Any]] = []
        self._rest = RestSink(None)

    @property
    def rest(self) -> RestSink:
        return self._rest

    async def put(self, recipient_id: str, body: Dict[str, Any]) -> None:
        self.bodies.append(body)


def _output(**credentials: Any) -> SparkcentralOutput:
    settings = Settings.from_credentials(
        {"shared_secret": DEFAULT_SHARED_SECRET, "reply_mode": "webhook", **credentials}
    )
    state = make_state(None, max_size=100, dedup_ttl=60)
    return SparkcentralOutput(None, state, settings, Recorder())


def _bodies(out: SparkcentralOutput) -> List[Dict[str, Any]]:
    sink = out.sink
    assert isinstance(sink, Recorder)
    return sink.bodies


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    output_module._WITHHELD_WARNED.clear()


def test_successor_fields_are_on_with_hootsuite_and_off_on_classic() -> None:
    assert _output(platform="hootsuite").settings.allow_successor_fields is True
    assert _output().settings.allow_successor_fields is False
    assert _output(allow_successor_fields=True).settings.allow_successor_fields is True


async def test_top_level_fields_follow_the_text() -> None:
    out = _output(platform="hootsuite")
    # utter_message(text=..., applyTags=[...], indicateTyping=...) puts them at the top level
    await out.send_response(
        "c1",
        {"text": "hi", "applyTags": ["vip", "lead"], "indicateTyping": "STOP", "x": 1},
    )
    assert _bodies(out) == [
        {"sendMessage": {"text": "hi"}},
        {"applyTags": ["vip", "lead"], "indicateTyping": "STOP"},
    ]


async def test_response_metadata_and_custom_carry_fields() -> None:
    out = _output(platform="hootsuite")
    await out.send_response(
        "c1",
        {
            "text": "noted",
            "metadata": {"applyConversationNotes": [{"text": "wants pro"}], "rephrase": True},
            "custom": {"sendMessages": [{"text": "a"}, {"text": "b"}]},
        },
    )
    assert _bodies(out) == [
        {"sendMessage": {"text": "noted"}},
        {"sendMessages": [{"text": "a"}, {"text": "b"}]},
        {"applyConversationNotes": [{"text": "wants pro"}]},
    ]


async def test_a_note_may_be_a_plain_string() -> None:
    out = _output(platform="hootsuite")
    await out.send_custom_json("c1", {"applyConversationNotes": "call back tomorrow"})
    assert _bodies(out) == [{"applyConversationNotes": [{"text": "call back tomorrow"}]}]


async def test_bad_attribute_keys_are_warned_and_good_ones_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = _output(platform="hootsuite")
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        await out.send_custom_json(
            "c1",
            {"setContactAttributes": {"plan": "pro", "seats": 3, "e-mail": "a@b.c"}},
        )
    assert _bodies(out) == [{"setContactAttributes": {"plan": "pro", "seats": "3"}}]
    (warning,) = [r.getMessage() for r in caplog.records if "e-mail" in r.getMessage()]
    assert "^[a-zA-Z0-9_]+$" in warning and "plan, seats" in warning
    assert "c1" in warning

    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        await out.send_custom_json("c1", {"setContactAttributes": {"bad key": "x"}})
    assert len(_bodies(out)) == 1  # nothing left to send


async def test_classic_drops_successor_fields_naming_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = _output()
    with caplog.at_level(logging.DEBUG, logger="rasa_sparkcentral"):
        await out.send_custom_json(
            "c1",
            {
                "applyConversationNotes": [{"text": "n"}],
                "applyTags": ["vip"],
                "complete": "HANDOVER",
            },
        )
        await out.send_custom_json("c2", {"applyTags": ["vip"]})
    assert _bodies(out) == [{"complete": "HANDOVER"}]
    dropped = [r for r in caplog.records if "allow_successor_fields" in r.getMessage()]
    assert [r.levelno for r in dropped] == [logging.WARNING, logging.DEBUG]
    assert "applyTags, applyConversationNotes" in dropped[0].getMessage()
    assert "platform: hootsuite" in dropped[0].getMessage()


async def test_the_inbound_message_id_reaches_the_rest_sink() -> None:
    out = _output(platform="hootsuite")
    assert out.inbound_message_id is None
    out.inbound_message_id = "m-7"
    assert out.sink.rest.inbound_message_id == "m-7"
    state = make_state(None, max_size=100, dedup_ttl=60)
    given = SparkcentralOutput(None, state, out.settings, inbound_message_id="m-8")
    assert given.sink.rest.inbound_message_id == "m-8"


def test_tag_names_name_the_message_over_rest() -> None:
    body = {"applyTags": ["vip", {"messageId": "m-1", "tag": "old"}], "complete": "HANDOVER"}
    assert tags_for_rest(body, "m-9") == (
        {
            "applyTags": [
                {"messageId": "m-9", "tag": "vip"},
                {"messageId": "m-1", "tag": "old"},
            ],
            "complete": "HANDOVER",
        },
        [],
    )
    assert tags_for_rest(body, None) == (
        {"applyTags": [{"messageId": "m-1", "tag": "old"}], "complete": "HANDOVER"},
        ["vip"],
    )
    assert tags_for_rest({"applyTags": ["vip"]}, None) == ({}, ["vip"])
    assert tags_for_rest({"complete": "RESOLVED"}, None) == ({"complete": "RESOLVED"}, [])


async def test_rest_sink_without_message_id_drops_tag_names_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RestSink(None)
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        await sink.put("c1", {"applyTags": ["vip"]})
    # nothing was left to send: no delivery attempt (which, without a client, fails)
    assert sink.outcomes == []
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "'vip'" in warning and "messageId" in warning


# -- the webhook answer ---------------------------------------------------------------


def test_merge_carries_successor_fields_in_order() -> None:
    bodies = [
        {"sendMessage": {"text": "a"}},
        {"applyTags": ["vip", "lead"], "indicateTyping": "START"},
        {
            "applyConversationNotes": [{"text": "first"}],
            "setContactAttributes": {"plan": "x", "city": "Gent"},
        },
        {"applyTags": ["lead", "pro"], "setContactAttributes": {"plan": "pro", "seats": "3"}},
        {"applyConversationNotes": [{"text": "second"}], "indicateTyping": "STOP"},
        {"complete": "HANDOVER", "applyTopics": ["sales"]},
    ]
    answer, rest = merge_answer(bodies, can_use_rest=True, allow_successor_fields=True)
    assert rest == []
    assert answer == {
        "sendMessage": {"text": "a"},
        "applyTopics": ["sales"],
        "applyTags": ["vip", "lead", "pro"],
        "applyConversationNotes": [{"text": "first"}, {"text": "second"}],
        "setContactAttributes": {"plan": "pro", "city": "Gent", "seats": "3"},
        "indicateTyping": "STOP",
        "complete": "HANDOVER",
    }
    keys = list(answer)
    assert keys[0] == "sendMessage" and keys[-1] == "complete"


def test_merge_sends_tags_naming_their_message_over_rest_before_completion() -> None:
    tag = {"messageId": "m-1", "tag": "old"}
    bodies = [
        {"sendMessage": {"text": "a"}},
        {"applyTags": ["vip", tag]},
        {"complete": "RESOLVED"},
    ]
    answer, rest = merge_answer(bodies, can_use_rest=True, allow_successor_fields=True)
    assert answer == {"sendMessage": {"text": "a"}, "applyTags": ["vip"]}
    assert rest == [{"applyTags": [tag], "complete": "RESOLVED"}]

    two = [{"sendMessage": {"text": "a"}}, {"sendMessage": {"text": "b"}}, *bodies[1:]]
    answer, rest = merge_answer(two, can_use_rest=True, allow_successor_fields=True)
    assert rest == [{"sendMessage": {"text": "b"}}, {"applyTags": [tag], "complete": "RESOLVED"}]


def test_merge_without_rest_drops_tags_naming_their_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bodies = [{"applyTags": ["vip", {"messageId": "m-1", "tag": "old"}]}, {"complete": "RESOLVED"}]
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        answer, rest = merge_answer(bodies, can_use_rest=False, allow_successor_fields=True)
    assert answer == {"applyTags": ["vip"], "complete": "RESOLVED"} and rest == []
    assert any("'old'" in r.getMessage() for r in caplog.records)


async def test_answer_to_no_contact_message_drops_tag_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _output(platform="hootsuite").settings
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    body = {"sendMessage": {"text": "hi"}, "applyTags": ["vip"]}

    answering = WebhookAnswer(RestSink(None, inbound_message_id="m-1"), settings)
    await answering.put("c1", dict(body))
    assert await answering.answer("c1", done) == body

    assignment = WebhookAnswer(RestSink(None), settings)  # CONVERSATION_STARTED: no message
    await assignment.put("c1", dict(body))
    with caplog.at_level(logging.WARNING, logger="rasa_sparkcentral"):
        assert await assignment.answer("c1", done) == {"sendMessage": {"text": "hi"}}
    assert any("'vip'" in r.getMessage() for r in caplog.records)
