"""A local Sparkcentral (Virtual Agent API) for tests, benchmarks, demos and manual chats.

Imports only the standard library, aiohttp and ``rasa_sparkcentral.signature``/``protocol``.

    async with SparkcentralEmulator(webhook_url=BOT_WEBHOOK_URL) as emu:
        # give emu.base_url to the connector as its base_url
        r = await emu.start_conversation()
        await emu.contact_says(r.conversation_id, "hi")
        texts = await emu.wait_for_bot_messages(r.conversation_id, 1)
"""

from __future__ import annotations

from .contact import (
    EVENT_CONVERSATION_DELEGATED,
    EVENT_CONVERSATION_STARTED,
    EVENT_INBOUND_MESSAGE_RECEIVED,
    build_envelope,
    default_channel,
    default_contact_attributes,
    default_contact_profile,
    encode_envelope,
    new_conversation_id,
    new_idempotency_key,
    signed_event,
)
from .events import EventBus, Subscription
from .faults import Fault, FaultPlan
from .models import (
    QUEUE_BOT,
    QUEUE_NEW,
    QUEUE_RESOLVED,
    BotAction,
    Conversation,
    EmulatorEvent,
    EmulatorTimeout,
    RecordedCall,
    TranscriptEntry,
    UnknownField,
    WebhookResult,
)
from .server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SHARED_SECRET,
    DEFAULT_WEBHOOK_URL,
    SparkcentralEmulator,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_SHARED_SECRET",
    "DEFAULT_WEBHOOK_URL",
    "EVENT_CONVERSATION_DELEGATED",
    "EVENT_CONVERSATION_STARTED",
    "EVENT_INBOUND_MESSAGE_RECEIVED",
    "QUEUE_BOT",
    "QUEUE_NEW",
    "QUEUE_RESOLVED",
    "BotAction",
    "Conversation",
    "EmulatorEvent",
    "EmulatorTimeout",
    "EventBus",
    "Fault",
    "FaultPlan",
    "RecordedCall",
    "SparkcentralEmulator",
    "Subscription",
    "TranscriptEntry",
    "UnknownField",
    "WebhookResult",
    "build_envelope",
    "default_channel",
    "default_contact_attributes",
    "default_contact_profile",
    "encode_envelope",
    "new_conversation_id",
    "new_idempotency_key",
    "signed_event",
]
