"""No one in: contact text that starts with "/" is plain text, not a command.

Rasa reads a message text ``/intent{"entity": ...}`` as that intent at full confidence
(``RegexMessageHandler``, the last node of the NLU graph, unpacks any text whose stripped
form starts with "/"), so a contact on a public channel could write ``/restart`` or
``/resolve``. Such a text is parsed here by Rasa's own NLU with a zero-width space in
front (the NLU components see the words, the regex handler does not fire), and the parse
data, with the original text put back and entity offsets shifted back, rides on the
``UserMessage``: Rasa uses given parse data as it is, and logs the contact's own text.

Button payloads the bot showed (and quick-reply payloads) are trusted and keep their
meaning; ``trust_slash_commands`` trusts every text (test channels).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

#: Rasa's prefix for a hard-coded intent (``rasa.shared.constants.INTENT_MESSAGE_PREFIX``).
COMMAND_PREFIX = "/"
#: Put in front of the text so that Rasa's regex handler does not read it as a command.
SHIELD = "\u200b"

Parse = Callable[[str], Awaitable[Dict[str, Any]]]


def looks_like_command(text: Optional[str]) -> bool:
    return bool(text) and str(text).strip().startswith(COMMAND_PREFIX)


async def as_plain_text(text: str, parse: Optional[Parse]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """The (text, parse data) to give Rasa for a contact's text that starts with "/".

    With Rasa's NLU at hand: the text unchanged and the NLU's parse of it as words. Without
    (no agent loaded): the shielded text, which Rasa parses as words itself."""
    shielded = SHIELD + text
    if parse is None:
        return shielded, None
    parse_data = dict(await parse(shielded))
    parse_data["text"] = text
    entities = []
    for entity in parse_data.get("entities") or []:
        entity = dict(entity)
        for offset in ("start", "end"):
            if isinstance(entity.get(offset), int):
                entity[offset] = max(0, entity[offset] - len(SHIELD))
        entities.append(entity)
    parse_data["entities"] = entities
    return text, parse_data
