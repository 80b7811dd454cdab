"""Inbound rules (issues 12 and 14): assignment semantics, quick-reply payloads, what
the bot learns about a message, refreshed details, and when a /restart opens a session.

Real Rasa trackers and domains; no agent (the rules take small async functions)."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Optional

import pytest
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ConversationPaused,
    Restarted,
    SessionStarted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.inbound import (
    Inbound,
    Turn,
    channel_details,
    live_session,
    message_metadata,
    session_is_live,
)
from rasa_sparkcentral.protocol import ChannelDetails, Event, parse_event
from rasa_sparkcentral.state import MemoryState

SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
CID = "0-conversation"


def settings(**extra: Any) -> Settings:
    return Settings.from_credentials({"shared_secret": SECRET, "reply_mode": "webhook", **extra})


def event(event_type: str, **data: Any) -> Event:
    envelope = {
        "timestamp": "2022-04-28T09:43:26.635984618Z",
        "idempotencyKey": "key",
        "version": 1,
        "type": event_type,
        "data": {"conversationId": CID, **data},
    }
    return parse_event(json.dumps(envelope).encode())


async def turn_of(
    inbound: Inbound,
    ev: Event,
    *,
    live: Optional[bool] = True,
    shown: Optional[List[Dict[str, str]]] = None,
) -> Turn:
    async def take() -> Optional[List[Dict[str, str]]]:
        return shown

    async def is_live() -> bool:
        assert live is not None
        return live

    return await inbound.turn(
        ev,
        metadata={},
        output=CollectingOutputChannel(),
        shown=take,
        session_is_live=None if live is None else is_live,
    )


def texts(turn: Turn) -> List[Optional[str]]:
    return [m.text for m in turn.messages]


# ----------------------------------------------------------------------------- assignment


async def test_started_waits_for_the_contact_by_default() -> None:
    inbound = Inbound(settings())
    assert texts(await turn_of(inbound, event("CONVERSATION_STARTED"), live=True)) == ["/restart"]
    assert texts(await turn_of(inbound, event("CONVERSATION_STARTED"), live=False)) == []


async def test_delegated_greets_by_default() -> None:
    inbound = Inbound(settings())
    turn = await turn_of(inbound, event("CONVERSATION_DELEGATED"), live=True)
    assert texts(turn) == ["/restart", "/greet"]
    assert [m.message_id for m in turn.messages] == ["key:restart", "key:start"]
    assert texts(await turn_of(inbound, event("CONVERSATION_DELEGATED"), live=False)) == ["/greet"]


async def test_the_intents_after_assignment_are_settings() -> None:
    inbound = Inbound(
        settings(conversation_started_intent="hello", conversation_delegated_intent="")
    )
    assert texts(await turn_of(inbound, event("CONVERSATION_STARTED"), live=False)) == ["/hello"]
    assert texts(await turn_of(inbound, event("CONVERSATION_DELEGATED"), live=False)) == []


async def test_without_a_session_check_an_assignment_restarts() -> None:
    inbound = Inbound(settings())
    assert texts(await turn_of(inbound, event("CONVERSATION_STARTED"), live=None)) == ["/restart"]


# ----------------------------------------------------------------------------- messages


async def test_a_quick_reply_payload_goes_to_rasa_as_the_message() -> None:
    inbound = Inbound(settings())
    pressed = event(
        "INBOUND_MESSAGE_RECEIVED",
        message={"messageId": "m-1", "text": "Pro", "payload": "/plan_pro"},
    )
    turn = await turn_of(inbound, pressed)
    assert texts(turn) == ["/plan_pro"]
    assert turn.messages[0].message_id == "key"


async def test_a_payload_wins_over_a_listed_button_the_text_names() -> None:
    inbound = Inbound(settings())
    shown = [{"title": "Basic", "payload": "/plan_basic"}, {"title": "Pro", "payload": "/plan_x"}]
    pressed = event("INBOUND_MESSAGE_RECEIVED", message={"text": "1", "payload": "/plan_pro"})
    assert texts(await turn_of(inbound, pressed, shown=shown)) == ["/plan_pro"]
    typed = event("INBOUND_MESSAGE_RECEIVED", message={"text": "1"})
    assert texts(await turn_of(inbound, typed, shown=shown)) == ["/plan_basic"]


def test_the_metadata_names_the_message_topics_trigger_and_language() -> None:
    inbound_event = event(
        "INBOUND_MESSAGE_RECEIVED",
        message={"messageId": "m-7", "text": "hi", "payload": "BUY"},
        conversationTopics=["billing", "vip"],
        trigger={"type": "STORY", "action": "REPLY"},
        language="nl",
    )
    details = ChannelDetails(conversation_id=CID, channel_id="c-1", language="en")
    block = message_metadata(details, inbound_event)["sparkcentral"]
    assert block["messageId"] == "m-7"
    assert block["payload"] == "BUY"
    assert block["topics"] == ["billing", "vip"]
    assert block["trigger"] == {"type": "STORY", "action": "REPLY"}
    assert block["language"] == "nl"
    assert block["channelId"] == "c-1" and block["conversationId"] == CID
    quiet = message_metadata(details, event("INBOUND_MESSAGE_RECEIVED", message={"text": "x"}))
    assert {k: quiet["sparkcentral"][k] for k in ("messageId", "payload", "topics", "trigger")} == {
        "messageId": None,
        "payload": None,
        "topics": [],
        "trigger": None,
    }
    assert quiet["sparkcentral"]["language"] == "en"


async def test_an_inbound_event_that_repeats_details_refreshes_them() -> None:
    state = MemoryState(max_size=100, dedup_ttl=60)
    started = event(
        "CONVERSATION_STARTED",
        channel={"id": "c-1", "name": "Web"},
        medium={"id": "smooch-rtm"},
        contactProfile={"id": "p-1", "primaryIdentifier": "Ann"},
        language="en",
    )
    await channel_details(state, started)
    repeated = event(
        "INBOUND_MESSAGE_RECEIVED",
        message={"text": "hi"},
        channel={"id": "c-2", "name": "Instagram"},
        medium={"id": "instagram"},
        contactProfile={"id": "p-1", "primaryIdentifier": "Ann B."},
        language="fr",
    )
    details, known = await channel_details(state, repeated)
    assert known
    assert (details.channel_id, details.channel_name, details.medium) == (
        "c-2",
        "Instagram",
        "instagram",
    )
    assert details.contact_profile["primaryIdentifier"] == "Ann B." and details.language == "fr"
    # stored for the next message, which repeats nothing
    again, _ = await channel_details(
        state, event("INBOUND_MESSAGE_RECEIVED", message={"text": "x"})
    )
    assert again == details


async def test_details_learnt_from_an_unknown_conversation_are_kept() -> None:
    state = MemoryState(max_size=100, dedup_ttl=60)
    repeated = event("INBOUND_MESSAGE_RECEIVED", message={"text": "hi"}, medium={"id": "sms"})
    details, known = await channel_details(state, repeated)
    assert not known and details.medium == "sms"
    assert (await state.load_details(CID) or {}).get("medium") == "sms"


# ----------------------------------------------------------------------------- sessions


def domain(minutes: float) -> Domain:
    return Domain.from_dict({"session_config": {"session_expiration_time": minutes}})


def tracker(*events: Any) -> DialogueStateTracker:
    return DialogueStateTracker.from_events(CID, list(events))


def said(text: str, at: float) -> UserUttered:
    return UserUttered(text, timestamp=at)


NOW = 1_700_000_000.0
SESSION_START = (
    ActionExecuted("action_session_start"),
    SessionStarted(),
    ActionExecuted("action_listen"),
)


def test_no_tracker_or_an_empty_one_has_no_live_session() -> None:
    assert not live_session(None, domain(60), NOW)
    assert not live_session(tracker(), domain(60), NOW)
    # nothing since the last restart: Rasa starts a session itself
    assert not live_session(
        tracker(*SESSION_START, said("hi", NOW - 5), Restarted()), domain(60), NOW
    )


def test_a_session_is_live_within_its_expiration_time() -> None:
    recent = tracker(*SESSION_START, said("hi", NOW - 59 * 60))
    assert live_session(recent, domain(60), NOW)
    # paused by a handoff: still Rasa's current session, which only /restart ends
    paused = tracker(*SESSION_START, said("agent please", NOW - 60), ConversationPaused())
    assert live_session(paused, domain(60), NOW)


def test_an_expired_session_is_not_live() -> None:
    old = tracker(*SESSION_START, said("hi", NOW - 61 * 60), ConversationPaused())
    assert not live_session(old, domain(60), NOW)
    assert not live_session(tracker(*SESSION_START, said("hi", NOW - 4)), domain(0.05), NOW)


def test_sessions_that_never_expire_are_live() -> None:
    old = tracker(*SESSION_START, said("hi", NOW - 365 * 86400))
    assert live_session(old, domain(0), NOW)
    # no user message yet: Rasa does not count the session as expired
    assert live_session(tracker(*SESSION_START), domain(1), NOW)


def test_an_inactive_tracker_rasa_pro_has_no_live_session() -> None:
    """Rasa Pro >= 3.16 marks a tracker ``inactive`` when its session timer fires; the
    next user message opens a new session unless ``start_session_after_expiry`` is off."""
    inactive = tracker(*SESSION_START, said("hi", NOW - 5))
    inactive.inactive = True  # type: ignore[attr-defined]
    assert not live_session(inactive, domain(60), NOW)

    class NoNewSession:
        session_expiration_time = 60.0
        start_session_after_expiry = False

    class ProDomain:
        session_config = NoNewSession()

    assert live_session(inactive, ProDomain(), NOW)


class Store:
    def __init__(self, found: Any = None, error: bool = False) -> None:
        self.found, self.error = found, error

    async def retrieve(self, conversation_id: str) -> Any:
        if self.error:
            raise ConnectionError("tracker store down")
        return self.found


class Agent:
    def __init__(self, store: Optional[Store], minutes: float = 60) -> None:
        self.tracker_store = store
        self.domain = domain(minutes)


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (Agent(None), True),
        (Agent(Store(error=True)), True),
        (Agent(Store(None)), False),
        (Agent(Store(tracker(*SESSION_START, said("hi", time.time() - 30)))), True),
        (Agent(Store(tracker(*SESSION_START, said("hi", time.time() - 3600))), 1), False),
    ],
    ids=["no-store", "store-fails", "new-conversation", "live", "expired"],
)
async def test_session_is_live_reads_the_agents_tracker_store(agent: Agent, expected: bool) -> None:
    assert await session_is_live(agent, CID)() is expected
