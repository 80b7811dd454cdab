"""Buttons and quick replies on a medium that has none: a numbered list under the text,
and the contact's answer (a number or a title) turned back into the button's payload."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional


def normalise(buttons: Iterable[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Keep title and payload of each usable button (quick replies have the same shape)."""
    result = []
    for button in buttons:
        if not isinstance(button, dict):
            continue
        title = button.get("title")
        payload = button.get("payload")
        if title is None and payload is None:
            continue
        title_text = str(title if title is not None else payload)
        result.append(
            {"title": title_text, "payload": str(payload if payload is not None else title_text)}
        )
    return result


def render(text: Optional[str], buttons: List[Dict[str, str]]) -> str:
    """``text`` followed by one numbered line per button."""
    lines = [f"{i}. {b['title']}" for i, b in enumerate(buttons, start=1)]
    head = (text or "").rstrip()
    return "\n".join([head, *lines]) if head else "\n".join(lines)


def match(answer: Optional[str], buttons: List[Dict[str, str]]) -> Optional[str]:
    """The payload the answer picks (by number, ``2`` or ``2.``, or by title, ignoring
    case and surrounding spaces), else None."""
    if not answer or not buttons:
        return None
    cleaned = answer.strip()
    number = cleaned.rstrip(".)").strip()
    if number.isdigit():
        index = int(number)
        if 1 <= index <= len(buttons):
            return buttons[index - 1]["payload"]
        return None
    wanted = cleaned.casefold()
    for button in buttons:
        if button["title"].strip().casefold() == wanted:
            return button["payload"]
    return None
