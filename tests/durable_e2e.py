"""The end-to-end durability scenarios' shared steps (issue 13): conversations started,
messages sent without waiting for replies, and the check that every acknowledged message
was answered, in order, at most the messages in flight twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Dict, List, Tuple

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import response_text, settle

GREETING = response_text("utter_greet")
HOURS = response_text("utter_opening_hours")
SHIPPING = response_text("utter_shipping")
QUESTIONS = [("what are your opening hours?", HOURS), ("how long does shipping take?", SHIPPING)]


def sql_trackers(path: Path) -> Dict[str, str]:
    """A tracker store that survives the process (the replay reads it)."""
    return {"type": "SQL", "dialect": "sqlite", "db": str(path)}


async def start_conversations(emu: SparkcentralEmulator, n: int) -> List[str]:
    cids = []
    for _ in range(n):
        started = await emu.start_conversation()
        assert started.status == 200
        cids.append(started.conversation_id)
    for cid in cids:
        assert await emu.wait_for_bot_messages(cid, 1) == [GREETING]
    return cids


async def send_without_waiting(
    emu: SparkcentralEmulator, cids: List[str], per_conversation: int
) -> Dict[str, List[str]]:
    """Each conversation's contact sends its messages one after the other (each one
    acknowledged), all conversations at once; returns the replies expected."""
    expected = {cid: [GREETING] for cid in cids}

    async def one(cid: str) -> None:
        for i in range(per_conversation):
            text, reply = QUESTIONS[i % 2]
            result = await emu.contact_says(cid, text)
            assert (result.status, result.json) == (200, {}), result.text
            expected[cid].append(reply)

    await asyncio.gather(*(one(cid) for cid in cids))
    return expected


async def all_answered(
    emu: SparkcentralEmulator, expected: Dict[str, List[str]], in_flight: int = 0
) -> int:
    """Every conversation got the expected replies, in order; at most ``in_flight``
    replies twice in a row (a send cut off by a kill after Sparkcentral took it: the
    outbox cannot know, and sends it again). Returns the duplicates."""
    for cid, texts in expected.items():
        await emu.wait_for_bot_messages(cid, len(texts))
    for cid in expected:
        await settle(emu, cid, quiet=0.5)
    answered = {cid: emu.bot_texts(cid) for cid in expected}
    duplicates = sum(len(answered[c]) - len(expected[c]) for c in expected)
    assert duplicates <= in_flight, f"{duplicates} duplicated replies"
    assert {c: _without_repeats(t, e) for c, t, e in _zip(answered, expected)} == expected
    return duplicates


def _zip(
    answered: Dict[str, List[str]], expected: Dict[str, List[str]]
) -> List[Tuple[str, List[str], List[str]]]:
    return [(cid, answered[cid], expected[cid]) for cid in expected]


def _without_repeats(texts: List[str], expected: List[str]) -> List[str]:
    """``texts`` with an immediate repeat dropped where ``expected`` has none."""
    out: List[str] = []
    for text in texts:
        if out and text == out[-1] and expected[: len(out) + 1] != [*out, text]:
            continue
        out.append(text)
    return out
