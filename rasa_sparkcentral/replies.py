"""Webhook reply mode: fold a turn's conversation actions into one webhook answer."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


def merge_answer(
    bodies: List[Dict[str, Any]], *, can_use_rest: bool, allow_successor_fields: bool
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Return (webhook answer, actions still to send over REST, in order).

    The classic answer carries one message: the first goes in the answer with every
    topic; later messages go over REST, the last of them carrying ``complete`` so the
    conversation is not handed over before they arrive. Without API keys everything
    must fit in the answer: later texts are joined to the first (or listed in
    ``sendMessages`` where the successor fields are allowed).
    """
    messages: List[Dict[str, Any]] = []
    topics: List[str] = []
    complete: Optional[str] = None
    extra: Dict[str, Any] = {}
    for body in bodies:
        if body.get("sendMessage"):
            messages.append(dict(body["sendMessage"]))
        for message in body.get("sendMessages") or []:
            if isinstance(message, dict):
                messages.append(dict(message))
        for topic in body.get("applyTopics") or []:
            if topic not in topics:
                topics.append(topic)
        if body.get("complete"):
            complete = body["complete"]
        for key in ("setContactAttributes", "indicateTyping"):
            if key in body:
                extra[key] = body[key]

    answer: Dict[str, Any] = dict(extra)
    if topics:
        answer["applyTopics"] = topics
    rest: List[Dict[str, Any]] = []
    if len(messages) <= 1 or not can_use_rest:
        if messages:
            if len(messages) > 1 and allow_successor_fields:
                answer["sendMessages"] = messages
            else:
                answer["sendMessage"] = _join(messages)
        if complete:
            answer["complete"] = complete
        return answer, rest

    answer["sendMessage"] = messages[0]
    rest = [{"sendMessage": m} for m in messages[1:]]
    if complete:
        rest[-1]["complete"] = complete
    return answer, rest


def _join(messages: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One message from several: texts joined by blank lines, the first attachment kept."""
    if len(messages) == 1:
        return messages[0]
    texts = [m["text"] for m in messages if m.get("text")]
    attachments = [m["attachment"] for m in messages if m.get("attachment")]
    joined: Dict[str, Any] = {}
    if texts:
        joined["text"] = "\n\n".join(texts)
    if attachments:
        joined["attachment"] = attachments[0]
    return joined
