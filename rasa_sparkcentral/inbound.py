"""What one webhook event becomes for Rasa: the ``UserMessage``s to handle and the
conversation actions to apply before them (``Turn``), as data.

An assignment event opens a fresh session (``/restart``, then the start intent); a
contact's message is its text, or the payload of the button it picks, with the NLU result
attached when intents become topics. The buttons shown and the NLU are passed in as small
async functions, so the rules here need neither the channel's state nor a Rasa agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.shared.core.events import BotUttered, UserUttered

from rasa_sparkcentral import buttons as button_list
from rasa_sparkcentral import slash
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import ASSIGNMENT_EVENTS, CHANNEL_NAME, ChannelDetails, Event
from rasa_sparkcentral.state import ChannelState

logger = logging.getLogger(__name__)

RESTART_TEXT = "/restart"

Buttons = List[Dict[str, str]]
#: The buttons last shown in the conversation (taken: a second call gives None).
ShownButtons = Callable[[], Awaitable[Optional[Buttons]]]
#: Rasa's NLU: text → parse data (``Agent.parse_message``).
Parse = Callable[[str], Awaitable[Dict[str, Any]]]


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
    ) -> Turn:
        """The turn of ``event`` (built when its turn comes, so that the buttons shown by
        the previous turn are known). ``metadata`` rides on every message; the bot's
        replies go to ``output``."""
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
            # /restart also lifts the pause left by an earlier handoff.
            messages = [message(RESTART_TEXT, ":restart")]
            if self.settings.conversation_started_intent:
                messages.append(message(f"/{self.settings.conversation_started_intent}", ":start"))
            return Turn(messages)

        text = answer_text(event.text, await shown())
        actions: List[Dict[str, Any]] = []
        text, parse_data = await self.screen_command(
            text, trusted=text != (event.text or ""), parse=parse
        )
        if self.settings.intent_topics and parse is not None and text:
            if parse_data is None:
                parse_data = await parse(text)
            topic = self.topic_for(parse_data)
            if topic:
                actions.append({"applyTopics": [topic]})
        return Turn([message(text, "", parse_data)], actions)

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
    """The conversation's channel details (saved from an assignment event, else loaded),
    and whether the channel state knew the conversation (False after a restart without
    Redis, say)."""
    if event.type in ASSIGNMENT_EVENTS:
        details = ChannelDetails.from_event(event)
        await state.save_details(event.conversation_id, details.to_dict())
        return details, True
    stored = await state.load_details(event.conversation_id)
    if stored:
        return ChannelDetails.from_dict(stored), True
    return ChannelDetails(conversation_id=event.conversation_id), False


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
