"""The channel details as slots, on the action server's side (rasa_sdk only).

The Sparkcentral channel gives Rasa the conversation's channel details in a message's
metadata (``metadata["sparkcentral"]``) only when they are new to Rasa (the first message
``rasa run`` hands Rasa in a conversation, an assignment, a change), unless
``details_in_every_message`` is true. Every other message's block says only what the
message itself says. Between those messages the slots keep the details, and where Rasa
emptied them (a restart the bot ran, a new session without carry-over), they come back
from the latest earlier event that held them: a message that carried them, or the slot
events that filled them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from rasa_sparkcentral.protocol import METADATA_KEY

if TYPE_CHECKING:  # init and doctor read the slot names without rasa_sdk
    from rasa_sdk import Tracker

#: Keys of the metadata block that describe one message rather than the conversation.
MESSAGE_KEYS = ("messageId", "payload", "topics", "conversationTopics", "trigger")
#: The slot holding the whole details object.
DETAILS_SLOT = "sparkcentral_channel_details"
#: The slots filled from the details (``channel_details_slots``), in its order.
DETAIL_SLOTS = (
    DETAILS_SLOT,
    "sparkcentral_conversation_id",
    "sparkcentral_channel_id",
    "sparkcentral_channel_name",
    "sparkcentral_medium",
    "sparkcentral_contact_id",
    "sparkcentral_medium_contact_profile_id",
    "sparkcentral_primary_identifier",
    "sparkcentral_secondary_identifier",
    "sparkcentral_picture_url",
    "sparkcentral_vip",
    "sparkcentral_contact_attributes",
)


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
    values = (
        {k: v for k, v in details.items() if k not in MESSAGE_KEYS},
        details.get("conversationId"),
        details.get("channelId"),
        details.get("channelName"),
        details.get("medium"),
        profile.get("id"),
        profile.get("mediumContactProfileId"),
        profile.get("primaryIdentifier"),
        profile.get("secondaryIdentifier"),
        profile.get("pictureUrl"),
        bool(vip),
        attributes,
    )
    return dict(zip(DETAIL_SLOTS, values))


def message_slots(block: Dict[str, Any]) -> Dict[str, Any]:
    """Slot name → value for what one message says: ``sparkcentral_language`` (when the
    message names one), ``sparkcentral_topics`` (the conversation's topics) and
    ``sparkcentral_trigger`` (``{type, action}``: the post, story or reel the message
    answers; None for a private message), the last two when the block carries them."""
    slots: Dict[str, Any] = {}
    language = block.get("language")
    if isinstance(language, str) and language:
        slots["sparkcentral_language"] = language
    for key in ("topics", "conversationTopics"):
        if isinstance(block.get(key), list):
            slots["sparkcentral_topics"] = [t for t in block[key] if isinstance(t, str)]
            break
    if "trigger" in block:
        trigger = block["trigger"]
        slots["sparkcentral_trigger"] = dict(trigger) if isinstance(trigger, dict) else None
    return slots


def block_of(tracker: Tracker) -> Optional[Dict[str, Any]]:
    """The channel's metadata block of the latest message (None: not from this channel)."""
    return _block_in((tracker.latest_message or {}).get("metadata"))


def _block_in(metadata: Any) -> Optional[Dict[str, Any]]:
    block = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return block if isinstance(block, dict) else None


def _has_details(block: Any) -> bool:
    # a message whose details were lost (no profile, no channel) must not wipe the slots
    return isinstance(block, dict) and bool(block.get("contactProfile") or block.get("channelId"))


def _details_in(event: Any) -> Optional[Dict[str, Any]]:
    """The details an event of the tracker holds: a message that carried them, or the
    ``sparkcentral_channel_details`` slot set to them."""
    if not isinstance(event, dict):
        return None
    kind = event.get("event")
    if kind == "user":
        block = _block_in(event.get("metadata"))
        return block if _has_details(block) else None
    if kind == "slot" and event.get("name") == DETAILS_SLOT and _has_details(event.get("value")):
        value: Dict[str, Any] = event["value"]
        return value
    return None


def channel_details(tracker: Tracker) -> Optional[Dict[str, Any]]:
    """The conversation's channel details as the Sparkcentral channel last gave them to
    Rasa (``conversationId``, ``channelId``, ``channelName``, ``medium``,
    ``contactProfile``, ``contactAttributes``, ``language``), or None.

    The latest message carries them when they are new to Rasa (or always, with the
    channel setting ``details_in_every_message: true``); else this reads the latest of
    the events Rasa gives the action that held them (a message that carried them, or the
    ``sparkcentral_channel_details`` slot set to them), else that slot's value.
    """
    block = block_of(tracker)
    if _has_details(block):
        return block
    for event in reversed(tracker.events or []):
        found = _details_in(event)
        if found is not None:
            return found
    held = tracker.get_slot(DETAILS_SLOT)
    return held if _has_details(held) else None


def _initial_value(spec: Any) -> Any:
    return spec.get("initial_value") if isinstance(spec, dict) else None


def recovered_slots(tracker: Tracker, declared: Mapping[str, Any]) -> Dict[str, Any]:
    """Slot → value for the details slots of ``declared`` (the domain's slots) that are
    back at their initial value although an earlier event set them (Rasa reset them: a
    restart, a new session), as that latest event set them. For when no event holds the
    whole details (the bot does not declare ``sparkcentral_channel_details``)."""
    wanted = {
        name
        for name in DETAIL_SLOTS
        if name in declared and tracker.get_slot(name) == _initial_value(declared[name])
    }
    found: Dict[str, Any] = {}
    for event in reversed(tracker.events or []):
        if not wanted:
            break
        if not isinstance(event, dict) or event.get("event") != "slot":
            continue
        name = event.get("name")
        if name in wanted:
            wanted.discard(name)
            value = event.get("value")
            if value != _initial_value(declared[name]):
                found[name] = value
    return found


def slot_updates(tracker: Tracker, domain: Dict[str, Any]) -> Dict[str, Any]:
    """Slot → value for the ``sparkcentral_*`` slots the domain declares whose value the
    latest message changes (empty where nothing changed)."""
    block = block_of(tracker)
    if block is None:
        return {}
    declared = domain.get("slots") or {}
    details = channel_details(tracker)
    if details is not None:
        values = channel_details_slots(details)
    else:
        values = recovered_slots(tracker, declared)
    values.update(message_slots(block))
    return {
        slot: value
        for slot, value in values.items()
        if slot in declared and tracker.get_slot(slot) != value
    }
