"""Custom actions for a bot's action server (rasa_sdk only; no Sparkcentral credentials).

Register them with one line in your actions package::

    from rasa_sparkcentral.actions import *  # noqa: F401,F403

- ``action_handoff_to_sparkcentral``: "send to offload provider". Says ``utter_handoff``
  when the domain has it, applies the topics from the ``sparkcentral_handoff_topics``
  slot (or the ``SPARKCENTRAL_HANDOFF_TOPICS`` environment variable, comma-separated),
  completes the conversation with ``HANDOVER`` and pauses it, so the bot stays silent.
- ``action_resolve_conversation``: the same with ``utter_resolved`` and ``RESOLVED``.
- ``action_sparkcentral_channel_details``: fills the ``sparkcentral_*`` slots from the
  channel details the Sparkcentral channel puts in each message's metadata (use it as
  the ``action`` of a ``custom`` slot mapping).

The handoff itself is a custom payload that the Sparkcentral output channel (which
holds the API keys) carries out after the messages before it.
"""

from __future__ import annotations

import os
from abc import ABCMeta, abstractmethod
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from rasa_sparkcentral.protocol import METADATA_KEY

__all__ = [
    "ActionHandoffToSparkcentral",
    "ActionResolveConversation",
    "ActionSparkcentralChannelDetails",
    "channel_details_slots",
]

TOPICS_SLOT = "sparkcentral_handoff_topics"
TOPICS_ENV = "SPARKCENTRAL_HANDOFF_TOPICS"
ACTION_LISTEN = "action_listen"


def _has_response(domain: Dict[str, Any], name: str) -> bool:
    return name in (domain.get("responses") or {})


def _topics(tracker: Tracker, domain: Dict[str, Any]) -> List[str]:
    value: Any = None
    if TOPICS_SLOT in (domain.get("slots") or {}):
        value = tracker.get_slot(TOPICS_SLOT)
    if not value:
        value = os.environ.get(TOPICS_ENV, "")
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        return []
    return [str(t).strip() for t in value if str(t).strip()]


class _CompleteConversation(Action, metaclass=ABCMeta):
    """Say goodbye (if the domain has the response), apply topics, complete, pause.

    Abstract, so that rasa_sdk's action discovery does not register it."""

    completion = ""
    response = ""

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
        payload: Dict[str, Any] = {"complete": self.completion}
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

    def name(self) -> str:
        return "action_handoff_to_sparkcentral"


class ActionResolveConversation(_CompleteConversation):
    completion = "RESOLVED"
    response = "utter_resolved"

    def name(self) -> str:
        return "action_resolve_conversation"


def channel_details_slots(details: Dict[str, Any]) -> Dict[str, Any]:
    """Slot name → value for one ``metadata["sparkcentral"]`` block."""
    profile = details.get("contactProfile") or {}
    attributes = {}
    for item in details.get("contactAttributes") or []:
        if isinstance(item, dict) and item.get("attribute") is not None:
            attributes[str(item["attribute"])] = item.get("value")
    vip = profile.get("vip")
    if isinstance(vip, str):
        vip = vip.strip().lower() == "true"
    return {
        "sparkcentral_channel_details": details,
        "sparkcentral_conversation_id": details.get("conversationId"),
        "sparkcentral_channel_id": details.get("channelId"),
        "sparkcentral_channel_name": details.get("channelName"),
        "sparkcentral_medium": details.get("medium"),
        "sparkcentral_contact_id": profile.get("id"),
        "sparkcentral_medium_contact_profile_id": profile.get("mediumContactProfileId"),
        "sparkcentral_primary_identifier": profile.get("primaryIdentifier"),
        "sparkcentral_secondary_identifier": profile.get("secondaryIdentifier"),
        "sparkcentral_picture_url": profile.get("pictureUrl"),
        "sparkcentral_vip": bool(vip),
        "sparkcentral_contact_attributes": attributes,
    }


def _details_of(tracker: Tracker) -> Optional[Dict[str, Any]]:
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    details = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(details, dict):
        return None
    # a message whose details were lost (no profile, no channel) must not wipe the slots
    if not details.get("contactProfile") and not details.get("channelId"):
        return None
    return details


class ActionSparkcentralChannelDetails(Action):
    """Fills the ``sparkcentral_*`` slots the domain declares, when they changed."""

    def name(self) -> str:
        return "action_sparkcentral_channel_details"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[str, Any],
    ) -> List[EventType]:
        details = _details_of(tracker)
        if details is None:
            return []
        declared = domain.get("slots") or {}
        return [
            SlotSet(slot, value)
            for slot, value in channel_details_slots(details).items()
            if slot in declared and tracker.get_slot(slot) != value
        ]
