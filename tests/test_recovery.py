"""The replay check against a real Rasa tracker store, and the bounded rejection log."""

from __future__ import annotations

import logging

import pytest
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from rasa_sparkcentral.ratelog import BoundedLog
from rasa_sparkcentral.recovery import already_handled


class Agent:
    """The one attribute of Rasa's Agent the check reads: a real tracker store."""

    def __init__(self) -> None:
        self.tracker_store = InMemoryTrackerStore(Domain.empty())


async def test_a_turn_in_the_tracker_is_not_run_again() -> None:
    agent = Agent()
    tracker = DialogueStateTracker.from_events(
        "c1",
        [
            UserUttered("/restart", message_id="assign-1:restart"),
            UserUttered("hello", message_id="msg-1"),
        ],
    )
    await agent.tracker_store.save(tracker)
    assert await already_handled(agent, "c1", "msg-1")
    assert await already_handled(agent, "c1", "assign-1")  # an assignment's messages
    assert not await already_handled(agent, "c1", "msg-2")
    assert not await already_handled(agent, "c1", "msg")  # a prefix is not the key
    assert not await already_handled(agent, "unknown", "msg-1")
    assert not await already_handled(None, "c1", "msg-1")  # no agent: cannot tell


def test_rejections_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    log = BoundedLog(logging.getLogger("test.ratelog"), burst=3, period=3600)
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for i in range(100):
            log.warning("rejected %d", i)
    assert [r.getMessage() for r in caplog.records] == ["rejected 0", "rejected 1", "rejected 2"]
