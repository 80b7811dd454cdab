"""Custom actions for a bot's action server (rasa_sdk only; no Sparkcentral credentials).

Register them with one line in your actions package::

    from rasa_sparkcentral.actions import *  # noqa: F401,F403

- ``action_handoff_to_sparkcentral``: "send to offload provider". Says ``utter_handoff``
  when the domain has it, leaves a conversation note for the human agent that sums up
  what the bot learned (``handoff_note``), writes mapped slots to the contact's attributes
  (as ``action_set_sparkcentral_contact_attributes`` does), applies the topics from the
  ``sparkcentral_handoff_topics`` slot (or the ``SPARKCENTRAL_HANDOFF_TOPICS`` environment
  variable, comma-separated), completes the conversation with ``HANDOVER`` and pauses it,
  so the bot stays silent.
- ``action_resolve_conversation``: the same with ``utter_resolved`` and ``RESOLVED``, and
  without a note (no human reads the conversation next).
- ``action_set_sparkcentral_contact_attributes``: writes slots to the contact's
  attributes, slot → attribute as the ``sparkcentral_contact_attribute_map`` slot's value
  (usually its ``initial_value`` in the domain) or ``SPARKCENTRAL_CONTACT_ATTRIBUTES``
  (``"slot:attribute,slot2"``) say.
- ``action_sparkcentral_channel_details``: fills the ``sparkcentral_*`` slots from the
  channel details the Sparkcentral channel gives Rasa in message metadata (use it as the
  ``action`` of a ``custom`` slot mapping); ``channel_details(tracker)`` reads them in
  your own actions.

What the platform must do (complete, note, attributes) travels as a custom payload that
the Sparkcentral output channel (which holds the API keys) carries out after the messages
before it. Notes, attributes and tags are fields of Hootsuite Inbox 2.0: the channel sends
them with ``platform: hootsuite``, or on classic Sparkcentral with
``allow_successor_fields: true``, and otherwise drops them with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABCMeta, abstractmethod
from typing import Any, Dict, List, Mapping, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from rasa_sparkcentral.detail_slots import (
    channel_details,
    channel_details_slots,
    message_slots,
    slot_updates,
)
from rasa_sparkcentral.protocol import ATTRIBUTE_KEY_PATTERN, split_contact_attributes

__all__ = [
    "ActionHandoffToSparkcentral",
    "ActionResolveConversation",
    "ActionSetSparkcentralContactAttributes",
    "ActionSparkcentralChannelDetails",
    "channel_details",
    "channel_details_slots",
    "contact_attributes_from_slots",
    "handoff_note",
    "message_slots",
    "parse_attribute_map",
]

logger = logging.getLogger(__name__)

TOPICS_SLOT = "sparkcentral_handoff_topics"
TOPICS_ENV = "SPARKCENTRAL_HANDOFF_TOPICS"
#: slot → contact attribute, for action_set_sparkcentral_contact_attributes and handoffs
ATTRIBUTE_MAP_SLOT = "sparkcentral_contact_attribute_map"
ATTRIBUTE_MAP_ENV = "SPARKCENTRAL_CONTACT_ATTRIBUTES"
#: the handoff note: on unless this is false/off/no/0
NOTE_ENV = "SPARKCENTRAL_HANDOFF_NOTE"
#: which slots the handoff note lists (default: every slot the bot filled, see handoff_note)
NOTE_SLOTS_SLOT = "sparkcentral_handoff_note_slots"
NOTE_SLOTS_ENV = "SPARKCENTRAL_HANDOFF_NOTE_SLOTS"
#: how many of the contact's last messages the note quotes (default 3)
NOTE_MESSAGES_ENV = "SPARKCENTRAL_HANDOFF_NOTE_MESSAGES"
NOTE_MESSAGES = 3
#: bounds of the note: per quoted message or slot value, and in all
NOTE_ITEM_CHARS = 200
NOTE_MAX_CHARS = 2000
ACTION_LISTEN = "action_listen"
#: Slots a note leaves out by default: Rasa's own and the channel's (the agent's inbox
#: shows the contact's profile already).
_OWN_SLOTS = frozenset(
    {
        "requested_slot",
        "session_started_metadata",
        "return_value",
        "dialogue_stack",
        "flow_hashes",
    }
)
_OFF = frozenset({"false", "off", "no", "0"})


def _has_response(domain: Dict[str, Any], name: str) -> bool:
    return name in (domain.get("responses") or {})


def _declared(domain: Dict[str, Any], slot: str) -> bool:
    return slot in (domain.get("slots") or {})


def _names(value: Any) -> List[str]:
    """A list of names from a list or a comma-separated string."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        return []
    return [str(t).strip() for t in value if str(t).strip()]


def _setting(tracker: Tracker, domain: Dict[str, Any], slot: str, env: str) -> Any:
    """A setting from the domain (the slot's value) or else the environment."""
    value: Any = None
    if _declared(domain, slot):
        value = tracker.get_slot(slot)
    if not value:
        value = os.environ.get(env, "")
    return value


def _topics(tracker: Tracker, domain: Dict[str, Any]) -> List[str]:
    return _names(_setting(tracker, domain, TOPICS_SLOT, TOPICS_ENV))


# -- slots → contact attributes ------------------------------------------------------------


def parse_attribute_map(value: Any) -> Dict[str, str]:
    """slot → attribute from a mapping (``{plan: subscription_plan}``), a list of
    ``"slot"`` or ``"slot:attribute"``, or the same comma-separated
    (``"plan:subscription_plan,city"``); a bare slot name is also the attribute's."""
    if isinstance(value, Mapping):
        return {
            str(slot).strip(): str(attribute).strip()
            for slot, attribute in value.items()
            if str(slot).strip() and attribute is not None and str(attribute).strip()
        }
    mapping: Dict[str, str] = {}
    for item in _names(value):
        slot, _, attribute = item.partition(":")
        slot, attribute = slot.strip(), attribute.strip()
        if slot:
            mapping[slot] = attribute or slot
    return mapping


def _attribute_map(tracker: Tracker, domain: Dict[str, Any]) -> Dict[str, str]:
    return parse_attribute_map(_setting(tracker, domain, ATTRIBUTE_MAP_SLOT, ATTRIBUTE_MAP_ENV))


def _filled(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def contact_attributes_from_slots(
    slots: Mapping[str, Any],
    mapping: Mapping[str, str],
    known: Optional[Mapping[str, Any]] = None,
) -> Dict[str, str]:
    """attribute → value (as text) for every mapped slot that has a value, leaving out
    values the contact's attributes (``known``) already hold and attribute names the
    platform refuses (``^[a-zA-Z0-9_]+$``, warned about)."""
    wanted = {
        attribute: slots[slot] for slot, attribute in mapping.items() if _filled(slots.get(slot))
    }
    good, bad = split_contact_attributes(wanted)
    if bad:
        logger.warning(
            "%s: attribute names %s are not allowed (they must match %s); those slots are "
            "not written to the contact",
            ATTRIBUTE_MAP_SLOT,
            ", ".join(repr(b) for b in bad),
            ATTRIBUTE_KEY_PATTERN,
        )
    known = known or {}
    return {k: v for k, v in good.items() if known.get(k) != v}


def _attributes_to_set(tracker: Tracker, domain: Dict[str, Any]) -> Dict[str, str]:
    mapping = _attribute_map(tracker, domain)
    if not mapping:
        return {}
    known = tracker.get_slot("sparkcentral_contact_attributes")
    return contact_attributes_from_slots(
        tracker.current_slot_values(), mapping, known if isinstance(known, dict) else None
    )


class ActionSetSparkcentralContactAttributes(Action):
    """Writes slots to the contact's attributes (``setContactAttributes``), slot →
    attribute as ``sparkcentral_contact_attribute_map`` (or the environment) says. The
    platform keeps an attribute that already has a value."""

    def name(self) -> str:
        return "action_set_sparkcentral_contact_attributes"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        if not _attribute_map(tracker, domain):
            logger.warning(
                "%s: no slot → attribute mapping: give the %s slot an initial_value "
                "({slot: attribute}) in the domain, or set %s=slot:attribute,...",
                self.name(),
                ATTRIBUTE_MAP_SLOT,
                ATTRIBUTE_MAP_ENV,
            )
            return []
        attributes = _attributes_to_set(tracker, domain)
        if attributes:
            dispatcher.utter_message(json_message={"setContactAttributes": attributes})
        return []


# -- the handoff note ----------------------------------------------------------------------


def _clip(text: str, limit: int = NOTE_ITEM_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _intent_of(parse_data: Any) -> Optional[str]:
    intent = parse_data.get("intent") if isinstance(parse_data, dict) else None
    name = intent.get("name") if isinstance(intent, dict) else None
    return str(name) if name else None


def _note_slots(tracker: Tracker, domain: Dict[str, Any]) -> List[str]:
    chosen = _names(_setting(tracker, domain, NOTE_SLOTS_SLOT, NOTE_SLOTS_ENV))
    if chosen:
        return chosen
    slots = domain.get("slots") or {}
    names = []
    for name, spec in slots.items():
        if name in _OWN_SLOTS or name.startswith(("sparkcentral_", "knowledge_base_")):
            continue
        initial = spec.get("initial_value") if isinstance(spec, dict) else None
        if tracker.get_slot(name) == initial:
            continue  # nothing learned
        names.append(name)
    return names


def handoff_note(
    tracker: Tracker,
    domain: Dict[str, Any],
    *,
    messages: int = NOTE_MESSAGES,
    slots: Optional[List[str]] = None,
) -> Optional[str]:
    """A conversation note for the human agent who takes over: the contact's last
    ``messages`` messages (each clipped to 200 characters) with their intents, the last
    intent, and the chosen ``slots`` that have a value (default: every slot of the domain
    the bot filled, except Rasa's and the ``sparkcentral_*`` ones). None when the bot
    learned nothing (no message from the contact, no slot)."""
    said: List[str] = []
    last_intent: Optional[str] = None
    for event in tracker.applied_events():
        if event.get("event") != "user":
            continue
        intent = _intent_of(event.get("parse_data"))
        text = event.get("text")
        if intent:
            last_intent = intent
        # "/intent" texts are the channel's own messages or a button's payload, which
        # the slots tell better
        if isinstance(text, str) and text.strip() and not text.startswith("/"):
            said.append(f"- {_clip(text)}" + (f" ({intent})" if intent else ""))
    last_intent = _intent_of(tracker.latest_message) or last_intent
    names = slots if slots is not None else _note_slots(tracker, domain)
    known = [
        f"- {name}: {_clip(_shown(tracker.get_slot(name)))}"
        for name in names
        if _filled(tracker.get_slot(name))
    ]
    quoted = said[-messages:] if messages > 0 else []
    if not quoted and not known:
        return None
    lines = ["Handed over by the virtual agent (Rasa). What it learned:"]
    if last_intent:
        lines.append(f"Last intent: {last_intent}")
    if quoted:
        lines.append("The contact's last messages:")
        lines.extend(quoted)
    if known:
        lines.append("Known so far:")
        lines.extend(known)
    return _clip_lines(lines, NOTE_MAX_CHARS)


def _clip_lines(lines: List[str], limit: int) -> str:
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _note_messages() -> int:
    raw = os.environ.get(NOTE_MESSAGES_ENV, "").strip()
    if not raw:
        return NOTE_MESSAGES
    try:
        return max(0, int(raw))
    except ValueError:
        logger.warning("%s must be a whole number, not %r", NOTE_MESSAGES_ENV, raw)
        return NOTE_MESSAGES


def _note_wanted() -> bool:
    return os.environ.get(NOTE_ENV, "").strip().lower() not in _OFF


# -- handoff and resolve -------------------------------------------------------------------


class _CompleteConversation(Action, metaclass=ABCMeta):
    """Say goodbye (if the domain has the response), leave a note (handoff), set mapped
    contact attributes, apply topics, complete, pause.

    Abstract, so that rasa_sdk's action discovery does not register it."""

    completion = ""
    response = ""
    leaves_note = False

    @abstractmethod
    def name(self) -> str: ...

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[Dict[str, Any]]:
        if _has_response(domain, self.response):
            dispatcher.utter_message(response=self.response)
        payload: Dict[str, Any] = {}
        note = (
            handoff_note(tracker, domain, messages=_note_messages())
            if self.leaves_note and _note_wanted()
            else None
        )
        if note:
            payload["applyConversationNotes"] = [{"text": note}]
        # attributes are best sent with the completion
        attributes = _attributes_to_set(tracker, domain)
        if attributes:
            payload["setContactAttributes"] = attributes
        payload["complete"] = self.completion
        topics = _topics(tracker, domain)
        if topics:
            payload["applyTopics"] = topics
        dispatcher.utter_message(json_message=payload)
        # Paused, the bot runs no action, and Rasa would not log its usual action_listen.
        # Logging it keeps the tracker in the state Rasa's default rules expect, so the
        # /restart the channel sends when the conversation comes back is honoured.
        return [ConversationPaused(), ActionExecuted(ACTION_LISTEN)]


class ActionHandoffToSparkcentral(_CompleteConversation):
    completion = "HANDOVER"
    response = "utter_handoff"
    leaves_note = True

    def name(self) -> str:
        return "action_handoff_to_sparkcentral"


class ActionResolveConversation(_CompleteConversation):
    completion = "RESOLVED"
    response = "utter_resolved"

    def name(self) -> str:
        return "action_resolve_conversation"


class ActionSparkcentralChannelDetails(Action):
    """Fills the ``sparkcentral_*`` slots the domain declares, when they changed: the
    channel details (``channel_details_slots``; where Rasa emptied them and the message
    does not carry them, as the latest earlier event held them) and what the message says
    (``message_slots``)."""

    def name(self) -> str:
        return "action_sparkcentral_channel_details"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        return [SlotSet(slot, value) for slot, value in slot_updates(tracker, domain).items()]
