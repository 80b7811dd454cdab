"""What the channel-details slots cost Rasa each time it reads a conversation's tracker.

    .venv/bin/python benchmarks/tracker_cost.py
    .venv/bin/python benchmarks/tracker_cost.py --turns 20 --repeat 300

Rasa reads the tracker from its tracker store when a message arrives: the store rebuilds it
from the stored events (``TrackerStore.deserialise_tracker``; the SQL store builds each
event the same way). The script builds the example bot's trackers of a session of
``--turns`` messages over REST (the control), and with the channel's metadata and the
``SlotSet`` events the slot action writes on the first message (the details only there,
as the channel sends them by default), then times that rebuild and a few other steps Rasa
takes per turn on the whole tracker. It prints µs per call and per event.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rasa.core.tracker_store import InMemoryTrackerStore  # noqa: E402
from rasa.shared.core.domain import Domain  # noqa: E402
from rasa.shared.core.events import (  # noqa: E402
    ActionExecuted,
    BotUttered,
    Event,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity  # noqa: E402

from rasa_sparkcentral.detail_slots import channel_details_slots, message_slots  # noqa: E402

DETAILS: Dict[str, Any] = {
    "conversationId": "conv-1",
    "channelId": "0-01c6421333d-000-4a29abb0",
    "channelName": "Demo Channel",
    "medium": "twitter",
    "contactProfile": {
        "id": "0-01e639d0a57-000-516b9710",
        "mediumContactProfileId": "2853168558034488",
        "primaryIdentifier": "Anna",
        "secondaryIdentifier": "Anna De Meyer",
        "pictureUrl": "https://example.invalid/avatars/anna.png",
        "vip": True,
    },
    "contactAttributes": [
        {"attribute": "smooch-rtm-browser-language", "value": "en-GB", "source": "MEDIUM"},
    ],
    "language": "en-GB",
}
QUESTIONS = [("what are your opening hours?", "ask_opening_hours", "utter_opening_hours")]


def session(domain: Domain, turns: int, channel: bool) -> List[Event]:
    declared = {slot.name for slot in domain.slots}
    events: List[Event] = [ActionExecuted("action_session_start"), ActionExecuted("action_listen")]
    for turn in range(turns):
        text, intent, response = QUESTIONS[turn % len(QUESTIONS)]
        metadata: Dict[str, Any] = {}
        if channel:
            block = {"conversationId": "conv-1", "messageId": f"m-{turn}", "language": "en-GB"}
            metadata = {"sparkcentral": {**DETAILS, **block} if turn == 0 else block}
        parse = {"intent": {"name": intent, "confidence": 0.99}, "entities": [], "text": text}
        events.append(UserUttered(text, parse["intent"], [], parse, metadata=metadata))
        if channel and turn == 0:
            values = {**channel_details_slots(DETAILS), **message_slots(metadata["sparkcentral"])}
            events += [SlotSet(k, v) for k, v in values.items() if k in declared]
        events += [
            ActionExecuted(response),
            BotUttered("Answer.", {"elements": None, "buttons": None}),
            ActionExecuted("action_listen"),
        ]
    return events


def per_call(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1e6


def timed_steps(
    store: InMemoryTrackerStore, domain: Domain, tracker: DialogueStateTracker, repeat: int
) -> Dict[str, float]:
    stored = store.serialise_tracker(tracker)
    steps: Dict[str, Callable[[], Any]] = {
        "rebuild from the store": lambda: store.deserialise_tracker("conv-1", stored),
        "save to the store": lambda: store.serialise_tracker(tracker),
        "state for the action server": lambda: json.dumps(
            tracker.current_state(EventVerbosity.ALL)
        ),
        "past states (policies)": lambda: tracker.past_states(domain),
    }
    return {step: per_call(fn, repeat) for step, fn in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8, help="messages in the session (8)")
    parser.add_argument("--repeat", type=int, default=200, help="calls timed per step (200)")
    args = parser.parse_args()
    domain = Domain.load(str(REPO / "example_bot" / "domain.yml"))
    store = InMemoryTrackerStore(domain)
    rows = []
    for name, channel in (("REST", False), ("with the channel's details and slots", True)):
        events = session(domain, args.turns, channel)
        tracker = DialogueStateTracker.from_events("conv-1", events, domain.slots)
        rows.append((name, len(events), timed_steps(store, domain, tracker, args.repeat)))
    print(f"a session of {args.turns} messages, {args.repeat} calls per step, µs per call")
    print(f"| step | {' | '.join(f'{name} ({count} events)' for name, count, _ in rows)} |")
    print(f"|---|{'---|' * len(rows)}")
    for step in rows[0][2]:
        print(f"| {step} | {' | '.join(f'{timed[step]:.0f}' for _, _, timed in rows)} |")
    (_, base_count, base), (_, count, other) = rows
    extra = count - base_count
    step = "rebuild from the store"
    print(
        f"{step}: {other[step] - base[step]:.0f} µs more for {extra} more events, "
        f"{(other[step] - base[step]) / extra:.0f} µs per event "
        f"({base[step] / base_count:.0f} µs per event over REST)"
    )


if __name__ == "__main__":
    main()
