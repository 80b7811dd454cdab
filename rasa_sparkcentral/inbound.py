"""What one webhook event becomes for Rasa: the ``UserMessage``s to handle and the
conversation actions to apply before them (``Turn``), as data.

An assignment event opens a fresh session (``/restart`` where Rasa would go on with the
current one), then sends the intent set for it: none after CONVERSATION_STARTED (the
contact's messages follow from the beginning of the conversation), ``greet`` after
CONVERSATION_DELEGATED (the bot is expected to ask the first question). A contact's message
is the payload of the quick reply or postback button pressed, or its text (or the payload
of the listed button it names), with the NLU result attached when intents become topics.
The buttons shown, the NLU and whether a session is live are passed in as small async
functions, so the rules here need neither the channel's state nor a Rasa agent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUttered

from rasa_sparkcentral import buttons as button_list
from rasa_sparkcentral import slash
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import (
    ASSIGNMENT_EVENTS,
    CHANNEL_NAME,
    CONVERSATION_DELEGATED,
    METADATA_KEY,
    ChannelDetails,
    Event,
)
from rasa_sparkcentral.state import ChannelState, TTLCache

logger = logging.getLogger(__name__)

RESTART_TEXT = "/restart"

Buttons = List[Dict[str, str]]
#: The buttons last shown in the conversation (taken: a second call gives None).
ShownButtons = Callable[[], Awaitable[Optional[Buttons]]]
#: Rasa's NLU: text → parse data (``Agent.parse_message``).
Parse = Callable[[str], Awaitable[Dict[str, Any]]]
#: Whether Rasa would go on with the conversation's current session (see ``live_session``).
SessionIsLive = Callable[[], Awaitable[bool]]


@dataclass
class Turn:
    """One event's work: ``actions`` (conversation actions, e.g. topics) to write to the
    output first, then ``messages`` to hand to Rasa, in order."""

    messages: List[UserMessage]
    actions: List[Dict[str, Any]] = field(default_factory=list)


class Inbound:
    """The rules turning events into turns, under the channel's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def turn(
        self,
        event: Event,
        *,
        metadata: Dict[str, Any],
        output: OutputChannel,
        shown: ShownButtons,
        parse: Optional[Parse] = None,
        session_is_live: Optional[SessionIsLive] = None,
    ) -> Turn:
        """The turn of ``event`` (built when its turn comes, so that the buttons shown by
        the previous turn are known and the tracker is up to date). ``metadata`` rides on
        every message; the bot's replies go to ``output``. Without ``session_is_live`` an
        assignment always restarts."""
        key = event.idempotency_key

        def message(
            text: str, suffix: str, parse_data: Optional[Dict[str, Any]] = None
        ) -> UserMessage:
            return UserMessage(
                text=text,
                output_channel=output,
                sender_id=event.conversation_id,
                input_channel=CHANNEL_NAME,
                message_id=f"{key}{suffix}" if key else None,
                metadata=metadata,
                parse_data=parse_data,
            )

        if event.type in ASSIGNMENT_EVENTS:
            # The conversation is (again) the bot's: a fresh session with fresh details.
            # Where Rasa would go on with the current session, /restart ends it (and lifts
            # the pause left by an earlier handoff). Where it has none, or the session has
            # expired, Rasa opens a new one itself with the next message (a new session
            # lifts a pause too): a /restart there is redundant on Rasa OSS 3.6 and harmful
            # on Rasa Pro, whose action_session_start after the restart is skipped
            # ("session_already_started"), so that no action_listen follows and the next
            # intent matches no rule.
            messages = []
            if session_is_live is None or await session_is_live():
                messages.append(message(RESTART_TEXT, ":restart"))
            intent = self.assignment_intent(event)
            if intent:
                messages.append(message(f"/{intent}", ":start"))
            return Turn(messages)

        payload = event.payload
        if payload is not None:
            # The payload of the quick reply or postback button the contact pressed: set
            # by the bot's developer, so it goes to Rasa as it is (``/plan_pro`` is that
            # intent). Kept apart from the contact's own text, which is not trusted so.
            await shown()  # the buttons listed before are answered
            text, trusted = payload, True
        else:
            text = answer_text(event.text, await shown())
            # a numbered answer to buttons the bot showed became that button's payload
            trusted = text != (event.text or "")
        actions: List[Dict[str, Any]] = []
        text, parse_data = await self.screen_command(text, trusted=trusted, parse=parse)
        if self.settings.intent_topics and parse is not None and text:
            if parse_data is None:
                parse_data = await parse(text)
            topic = self.topic_for(parse_data)
            if topic:
                actions.append({"applyTopics": [topic]})
        return Turn([message(text, "", parse_data)], actions)

    def assignment_intent(self, event: Event) -> Optional[str]:
        """The intent sent after an assignment event (None: the bot waits)."""
        if event.type == CONVERSATION_DELEGATED:
            return self.settings.conversation_delegated_intent
        return self.settings.conversation_started_intent

    async def screen_command(
        self, text: str, *, trusted: bool, parse: Optional[Parse]
    ) -> Tuple[str, Optional[Dict[str, Any]]]:
        """A contact's text starting with "/" is plain text unless ``trusted`` (a button
        payload) or the settings trust commands (``slash``)."""
        if trusted or self.settings.trust_slash_commands or not slash.looks_like_command(text):
            return text, None
        return await slash.as_plain_text(text, parse)

    def topic_for(self, parse_data: Dict[str, Any]) -> Optional[str]:
        """The topic an NLU result names under ``intent_topics`` (None: no topic)."""
        intent = (parse_data.get("intent") or {}).get("name")
        if not intent:
            return None
        mapping = self.settings.intent_topics
        if isinstance(mapping, dict):
            topic = mapping.get(intent)
            return str(topic) if topic else None
        return str(intent)


def answer_text(text: Optional[str], shown: Optional[Buttons]) -> str:
    """The contact's text, or the payload of the button it picks."""
    if shown:
        payload = button_list.match(text, shown)
        if payload is not None:
            return payload
    return text or ""


async def channel_details(state: ChannelState, event: Event) -> Tuple[ChannelDetails, bool]:
    """The conversation's channel details (saved from an assignment event, else loaded
    and refreshed with whatever the event repeats: Inbox 2.0 sends ``channel``,
    ``contactProfile``, ``medium`` and ``language`` with every message), and whether the
    channel state knew the conversation (False after a restart without Redis, say)."""
    conversation_id = event.conversation_id
    if event.type in ASSIGNMENT_EVENTS:
        details = ChannelDetails.from_event(event)
        await state.save_details(conversation_id, details.to_dict())
        return details, True
    stored = await state.load_details(conversation_id)
    known = bool(stored)
    before = ChannelDetails.from_dict(stored) if stored else ChannelDetails(conversation_id)
    details = before.refreshed(event)
    if details != before:
        await state.save_details(conversation_id, details.to_dict())
    return details, known


def message_metadata(
    details: ChannelDetails, event: Event, *, with_details: bool = True
) -> Dict[str, Any]:
    """``UserMessage.metadata`` for the messages of ``event``: what the event says about
    the contact's message (None or empty where it says nothing): ``messageId``,
    ``payload`` (of the quick reply or postback button pressed), ``topics``
    (``conversationTopics``), ``trigger`` (``{type, action}``: the post, reel or story the
    message answers) and ``language``, with ``conversationId``; and, ``with_details``, the
    channel details (``ChannelDetails.to_dict``)."""
    block: Dict[str, Any] = (
        details.to_dict() if with_details else {"conversationId": details.conversation_id}
    )
    block.update(
        messageId=event.message_id,
        payload=event.payload,
        topics=event.topics,
        trigger=event.trigger,
        language=event.language or details.language,
    )
    return {METADATA_KEY: block}


class GivenDetails:
    """Which channel details this process last gave Rasa in full, per conversation (a
    bounded LRU of fingerprints), unless ``details_in_every_message``: a message carries
    them only when they are new to Rasa (the first message this process hands Rasa in a
    conversation, an assignment, a change), and every other message's block only what the
    message says; the slots keep them.

    Rasa stores a message's metadata twice (in the event and its parse data) and re-reads
    the session's events several times per turn, so about 600 bytes on every message slow
    a long session down. Where Rasa empties the slots (a restart the bot runs, a new
    session without carry-over), the slot action brings the details back from the
    earlier events it is handed (``detail_slots``).
    """

    def __init__(self, max_size: int, ttl: float) -> None:
        self._given: TTLCache[int] = TTLCache(max_size, ttl)

    @staticmethod
    def _fingerprint(details: ChannelDetails) -> int:
        return hash(repr(details))

    def are_new(self, details: ChannelDetails) -> bool:
        """Whether Rasa has not been given ``details`` in this conversation yet."""
        return self._given.get(details.conversation_id) != self._fingerprint(details)

    def given(self, details: ChannelDetails) -> None:
        """Rasa handled a message carrying ``details`` in full."""
        self._given.set(details.conversation_id, self._fingerprint(details))

    def __len__(self) -> int:
        return len(self._given)


def session_is_live(agent: Any, conversation_id: str) -> SessionIsLive:
    """Whether Rasa would go on with the conversation's current session, read from the
    agent's tracker store when the turn comes. When it cannot tell (no tracker store, or
    it fails), it answers True: a /restart then makes sure the session is fresh."""

    async def check() -> bool:
        tracker_store = getattr(agent, "tracker_store", None)
        if tracker_store is None:
            return True
        try:
            tracker = await tracker_store.retrieve(conversation_id)
        except Exception:
            logger.warning(
                "Conversation %s: could not read the tracker to see whether its session "
                "goes on; restarting it",
                conversation_id,
                exc_info=True,
            )
            return True
        return live_session(tracker, getattr(agent, "domain", None), time.time())

    return check


def live_session(tracker: Any, domain: Any, now: float) -> bool:
    """Whether Rasa would go on with ``tracker``'s current session for the next message
    (so that only a /restart makes it fresh) rather than start a new one itself.

    Rasa opens a new session before the next message when the tracker is new or empty
    since its last restart, or when the session has expired: Rasa OSS 3.6 compares the
    time since the last user message with ``session_expiration_time`` (minutes; 0: never
    expires) when the message arrives; Rasa Pro >= 3.16 runs a session timer that marks
    the tracker ``inactive`` (a ``ConversationInactive`` event), and the next user message
    starts a new session unless ``start_session_after_expiry`` is false.
    """
    if tracker is None or not tracker.applied_events():
        return False
    session_config = getattr(domain, "session_config", None)
    if getattr(tracker, "inactive", False):
        return getattr(session_config, "start_session_after_expiry", True) is False
    minutes = float(getattr(session_config, "session_expiration_time", 0) or 0)
    if minutes <= 0:
        return True
    last_message = tracker.get_last_event_for(UserUttered)
    if last_message is None:
        return True
    return (now - float(last_message.timestamp)) / 60 <= minutes


def shown_buttons(
    state: ChannelState, agent: Any, conversation_id: str, known: bool
) -> ShownButtons:
    """The buttons last shown: from the channel state, else (when the state did not know
    the conversation) from Rasa's tracker."""

    async def take() -> Optional[Buttons]:
        shown = await state.take_buttons(conversation_id)
        if shown is None and not known:
            shown = await buttons_from_tracker(agent, conversation_id)
        return shown

    return take


async def buttons_from_tracker(agent: Any, conversation_id: str) -> Optional[Buttons]:
    """The buttons of the bot's last message, read from Rasa's tracker store.

    Used when the channel's own state does not know the conversation (a restart without
    Redis): the tracker store is persistent, so numbered answers keep working.
    """
    tracker_store = getattr(agent, "tracker_store", None)
    if tracker_store is None:
        return None
    try:
        tracker = await tracker_store.retrieve(conversation_id)
    except Exception:
        logger.warning(
            "Conversation %s: could not read the tracker to find the buttons last shown",
            conversation_id,
            exc_info=True,
        )
        return None
    if tracker is None:
        return None
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            return None
        if isinstance(event, BotUttered):
            data = event.data or {}
            shown = data.get("buttons") or data.get("quick_replies")
            if shown:
                return button_list.normalise(shown)
    return None
