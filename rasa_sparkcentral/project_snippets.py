"""What ``rasa-sparkcentral init`` adds to a Rasa project, and how each piece is written.

The one home of the names (intents, slots, actions, responses, rules) that ``init`` writes
and ``doctor`` checks. Each ``*_lines`` function renders one YAML item at a given indent,
in the style of ``rasa init`` (two spaces per level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from rasa_sparkcentral.detail_slots import DETAIL_SLOTS as DETAIL_SLOT_NAMES
from rasa_sparkcentral.detail_slots import DETAILS_SLOT
from rasa_sparkcentral.rasa_edition import RasaEdition

ACTION_HANDOFF = "action_handoff_to_sparkcentral"
ACTION_RESOLVE = "action_resolve_conversation"
ACTION_DETAILS = "action_sparkcentral_channel_details"
ACTIONS = (ACTION_DETAILS, ACTION_HANDOFF, ACTION_RESOLVE)

INTENT_GREET = "greet"
INTENT_HANDOFF = "human_handoff"
INTENT_RESOLVE = "resolve"

VIP_SLOT = "sparkcentral_vip"
TOPICS_SLOT = "sparkcentral_handoff_topics"

#: The slots ``action_sparkcentral_channel_details`` fills from the details (their names
#: and order are ``detail_slots``'): name → (type, influences); text, not influencing,
#: unless listed here.
_DETAIL_SLOT_KINDS: Dict[str, Tuple[str, bool]] = {
    DETAILS_SLOT: ("any", False),
    VIP_SLOT: ("bool", True),
    "sparkcentral_contact_attributes": ("any", False),
}
DETAIL_SLOTS: Dict[str, Tuple[str, bool]] = {
    name: _DETAIL_SLOT_KINDS.get(name, ("text", False)) for name in DETAIL_SLOT_NAMES
}

INTENT_EXAMPLES: Dict[str, Tuple[str, ...]] = {
    INTENT_GREET: ("hi", "hello", "hey", "good morning", "hello there", "hi there"),
    INTENT_HANDOFF: (
        "I want to talk to a person",
        "agent please",
        "human",
        "can I speak to a human?",
        "let me talk to a real person",
        "connect me to an agent",
        "I need a human agent",
        "transfer me to customer service",
        "real person please",
        "talk to someone",
        "operator",
        "I'd like to speak with a representative",
    ),
    INTENT_RESOLVE: (
        "that's all, you can close this",
        "close the conversation",
        "you can close this conversation",
        "please close this chat",
        "we're done here",
        "that's everything, close it",
        "end the conversation",
        "mark this as resolved",
        "my issue is resolved",
        "nothing else, you can close the chat",
        "close this ticket",
        "resolve the conversation",
    ),
}
INTENTS = (INTENT_GREET, INTENT_HANDOFF, INTENT_RESOLVE)

RESPONSE_GREET_VIP = "utter_greet_vip"
RESPONSES: Dict[str, str] = {
    RESPONSE_GREET_VIP: "Welcome back, {sparkcentral_primary_identifier}! As one of our VIP "
    "customers you go straight to the front of the line. How can I help?",
    "utter_handoff": "I'm passing you to one of our human agents. They'll be with you shortly.",
    "utter_resolved": "Glad I could help. I'm closing this conversation now. Bye!",
}


@dataclass(frozen=True)
class Rule:
    name: str
    intent: str
    action: str
    vip: bool = False


#: Each rule, and the action whose presence in any rule or story means it is there already.
RULES = (
    Rule("greet a VIP contact (Sparkcentral)", INTENT_GREET, RESPONSE_GREET_VIP, vip=True),
    Rule(
        "hand the conversation over to a human agent in Sparkcentral",
        INTENT_HANDOFF,
        ACTION_HANDOFF,
    ),
    Rule("resolve the conversation in Sparkcentral", INTENT_RESOLVE, ACTION_RESOLVE),
)

ACTIONS_IMPORT = "from rasa_sparkcentral.actions import *  # noqa: F401,F403"
ACTIONS_IMPORT_LINES = (
    "# Sparkcentral's handoff, resolve and channel-details actions (rasa-sparkcentral)",
    ACTIONS_IMPORT,
)

DEFAULT_ACTION_URL = "http://localhost:5055/webhook"
ENDPOINTS_LINES = (
    "# Where `rasa run` finds the action server (`rasa run actions`); added by rasa-sparkcentral",
    "action_endpoint:",
    f'  url: "{DEFAULT_ACTION_URL}"',
)

ENV_CLIENT_ID = "SPARKCENTRAL_CLIENT_ID"
ENV_CLIENT_SECRET = "SPARKCENTRAL_CLIENT_SECRET"
ENV_SHARED_SECRET = "SPARKCENTRAL_SHARED_SECRET"
ENV_BASE_URL = "SPARKCENTRAL_BASE_URL"
CREDENTIALS_LINES = (
    "# Sparkcentral by Hootsuite (rasa-sparkcentral). Rasa reads each ${...} from the",
    "# environment and refuses to start when one is unset: the API keys from Settings →",
    "# Integrations → Generate API Keys, the shared secret shown when you add the Custom",
    "# Virtual Agent. region: us or eu.",
    "rasa_sparkcentral.SparkcentralInput:",
    f"  client_id: ${{{ENV_CLIENT_ID}}}",
    f"  client_secret: ${{{ENV_CLIENT_SECRET}}}",
    f"  shared_secret: ${{{ENV_SHARED_SECRET}}}",
    "  region: us",
    "  # With the local emulator (sparkcentral-emulator) only:",
    f"  # base_url: ${{{ENV_BASE_URL}}}",
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def slot_lines(name: str, edition: RasaEdition, indent: str) -> List[str]:
    if name == TOPICS_SLOT:
        slot_type, influence, action = "list", False, None
    else:
        slot_type, influence = DETAIL_SLOTS[name]
        action = ACTION_DETAILS
    lines = [
        f"{indent}{name}:",
        f"{indent}  type: {slot_type}",
        f"{indent}  influence_conversation: {'true' if influence else 'false'}",
        f"{indent}  mappings:",
    ]
    mapping = list(edition.slot_mapping(action).items())
    key, value = mapping[0]
    lines.append(f"{indent}    - {key}: {value}")
    lines.extend(f"{indent}      {k}: {v}" for k, v in mapping[1:])
    return lines


def slot_names() -> List[str]:
    return [*DETAIL_SLOTS, TOPICS_SLOT]


def response_lines(name: str, indent: str) -> List[str]:
    return [f"{indent}{name}:", f"{indent}  - text: {_quote(RESPONSES[name])}"]


def nlu_lines(intent: str, indent: str) -> List[str]:
    lines = [f"{indent}- intent: {intent}", f"{indent}  examples: |"]
    lines.extend(f"{indent}    - {example}" for example in INTENT_EXAMPLES[intent])
    return lines


def rule_lines(rule: Rule, indent: str) -> List[str]:
    lines = [
        f"{indent}- rule: {rule.name}",
        f"{indent}  steps:",
        f"{indent}    - intent: {rule.intent}",
    ]
    if rule.vip:
        lines += [f"{indent}    - slot_was_set:", f"{indent}        - {VIP_SLOT}: true"]
    lines.append(f"{indent}    - action: {rule.action}")
    return lines


def scalar_item_lines(name: str, indent: str) -> List[str]:
    return [f"{indent}- {name}"]


def rule_for(action: str) -> Optional[Rule]:
    return next((rule for rule in RULES if rule.action == action), None)
