"""Issue 13 "A 200 is a promise", on real ``rasa run`` + action server + emulator:

- SIGKILL with acknowledged messages in flight, start again: every one answered, in
  order, none twice (the embedded journal replays; the tracker check skips what ran);
- SIGTERM with a backlog longer than the grace: the rest answered after the next start;
- Sparkcentral answering 503 for a while: every reply delivered after it recovers, in
  order, once (the durable outbox retries until the reply deadline);
- contact texts starting with "/" reach Rasa as text, never as an intent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict

from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.processes import ManagedProcess
from tests.durable_e2e import (
    GREETING,
    HOURS,
    QUESTIONS,
    all_answered,
    send_without_waiting,
    sql_trackers,
    start_conversations,
)
from tests.helpers import get_tracker, say_and_wait, settle
from tests.support import BOT_DIR, BotStarter, RasaHandle


def sigkill(rasa: RasaHandle) -> None:
    pid = rasa.process.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    rasa.process.stop()  # reaps it


async def test_acknowledged_messages_survive_a_sigkill(
    start_bot: BotStarter, tmp_path: Path
) -> None:
    rasa = await start_bot(
        name="rasa-durable-kill", tracker_store=sql_trackers(tmp_path / "trackers.db")
    )
    emu = rasa.emulator
    cids = await start_conversations(emu, 8)
    emu.faults.delay = 0.3  # Sparkcentral is slow: replies still waiting at the kill
    expected = await send_without_waiting(emu, cids, 4)
    sigkill(rasa)
    unanswered = sum(len(t) for t in expected.values()) - sum(len(emu.bot_texts(c)) for c in cids)
    assert unanswered > 0  # the kill did hit messages in flight
    emu.faults.delay = 0.0
    rasa.process.start()
    await rasa.process.wait_ready_async()
    # at most one send per conversation was on the wire at the kill
    duplicates = await all_answered(emu, expected, in_flight=len(cids))
    print(f"duplicated replies after the SIGKILL: {duplicates} (of {len(cids)} in flight)")


async def test_a_sigterm_backlog_longer_than_the_grace_is_answered_after_the_next_start(
    start_bot: BotStarter, tmp_path: Path
) -> None:
    rasa = await start_bot(
        name="rasa-durable-term",
        tracker_store=sql_trackers(tmp_path / "trackers.db"),
        shutdown_grace=0.5,
    )
    emu = rasa.emulator
    cids = await start_conversations(emu, 6)
    emu.faults.delay = 0.3
    expected = await send_without_waiting(emu, cids, 4)
    await rasa.process.stop_async()
    assert sum(len(emu.bot_texts(c)) for c in cids) < sum(len(t) for t in expected.values())
    emu.faults.delay = 0.0
    rasa.process.start()
    await rasa.process.wait_ready_async()
    await all_answered(emu, expected)


async def test_replies_wait_out_a_platform_outage_in_order_once(start_bot: BotStarter) -> None:
    rasa = await start_bot(name="rasa-durable-outage", reply_deadline=60)
    emu = rasa.emulator
    cids = await start_conversations(emu, 4)
    # every call fails for a while (far more than the old client's 6 quick attempts)
    emu.faults.fail_rate = 1.0
    emu.faults.random_status = 503
    expected = await send_without_waiting(emu, cids, 3)
    await asyncio.sleep(20)  # far longer than the old client's 6 quick attempts
    assert all(emu.bot_texts(cid) == [GREETING] for cid in cids)
    emu.faults.reset()
    await all_answered(emu, expected)
    assert emu.faults.injected > 0
    log = rasa.log_text()
    assert log.count("Sparkcentral unavailable") == 1
    assert "Sparkcentral available again" in log


async def test_slash_texts_from_a_contact_are_text_not_commands(
    start_bot: BotStarter,
) -> None:
    rasa = await start_bot(name="rasa-durable-slash")
    emu = rasa.emulator
    (cid,) = await start_conversations(emu, 1)
    queue = emu.conversations[cid].queue
    for text in ["/restart", "/resolve", '/greet{"x":1}']:
        result = await emu.contact_says(cid, text)
        assert result.status == 200
    await settle(emu, cid)
    tracker = await get_tracker(rasa.url, cid, include_events="ALL")
    users = [e for e in tracker["events"] if e["event"] == "user"][-3:]
    assert [u["text"] for u in users] == ["/restart", "/resolve", '/greet{"x":1}']
    for user in users:
        assert user["parse_data"]["intent"].get("confidence", 0) < 1.0
        assert user["parse_data"]["entities"] == []
    # not resolved, and no fresh session
    assert emu.conversations[cid].queue == queue
    assert not any("complete" in action for action in emu.actions_for(cid))
    assert not [e for e in tracker["events"] if e["event"] == "restart"]
    # the bot still understands plain questions afterwards
    assert await say_and_wait(emu, cid, "what are your opening hours?") == [HOURS]


async def test_a_dead_instances_acknowledged_messages_are_answered_by_the_other(
    start_bot: BotStarter, redis_server: ManagedProcess
) -> None:
    """Two instances on one Redis (journal, outbox, trackers, locks); A is SIGKILLed with
    messages in flight and not restarted: B takes A's conversations over once A's leases
    run out (``claim_after``) and answers everything, in order."""
    emulator = await start_bot.new_emulator()
    port = redis_server.port
    common: Dict[str, Any] = {
        "emulator": emulator,
        "tracker_store": processes.redis_tracker_store(port, db=3, key_prefix="durable"),
        "lock_store": processes.redis_lock_store(port, db=4, key_prefix="durable"),
        "redis_url": f"redis://127.0.0.1:{port}/5",
        "claim_after": 3,
        # Rasa's lock store keeps a dead holder's ticket for its lifetime (60 s by
        # default): the other instance's turns of that conversation wait that long
        "env": {"TICKET_LOCK_LIFETIME": "5"},
    }
    a, b = await asyncio.gather(
        start_bot(name="rasa-durable-a", **common),
        start_bot(name="rasa-durable-b", set_webhook=False, **common),
    )
    emulator.webhook_url = a.webhook_url
    cids = await start_conversations(emulator, 6)
    emulator.faults.delay = 0.3
    expected = await send_without_waiting(emulator, cids, 3)
    killed_at = time.monotonic()
    sigkill(a)
    emulator.faults.delay = 0.0
    emulator.webhook_url = b.webhook_url
    duplicates = await all_answered(emulator, expected, in_flight=len(cids))
    print(
        f"B answered A's backlog {time.monotonic() - killed_at:.1f} s after the kill "
        f"(claim_after 3 s); duplicated replies: {duplicates}"
    )
    # the conversations go on, on B, in order
    for cid in cids:
        assert await say_and_wait(emulator, cid, QUESTIONS[0][0]) == [QUESTIONS[0][1]]
    await b.stop()


async def test_slow_action_server_turns_do_not_hold_up_other_conversations(
    start_bot: BotStarter, server_logs: Path
) -> None:
    """Four conversations ask something whose action takes 6 s; then eight others ask
    quick questions. With two turn slots, had the slow turns kept their slots, every
    quick answer would come after a slow one; the slow turns give their slots back, so
    every quick conversation is answered before any slow one. (Order of arrival, not a
    timed assert; the waits are printed.)"""
    actions = processes.action_server(
        BOT_DIR,
        processes.free_port(),
        server_logs / "action-server-slow.log",
        env={"EXAMPLE_BOT_LANGUAGE_DELAY": "6"},
    )
    async with actions:
        await actions.wait_ready_async()
        rasa = await start_bot(
            name="rasa-durable-fair",
            action_url=f"{actions.url}/webhook",
            max_concurrent_turns=2,
        )
        emu = rasa.emulator
        slow = await start_conversations(emu, 4)
        quick = await start_conversations(emu, 8)
        began = time.monotonic()
        for cid in slow:
            assert (await emu.contact_says(cid, "what language am I using?")).status == 200
        for cid in quick:
            assert (await emu.contact_says(cid, QUESTIONS[0][0])).status == 200
        for cid in quick:
            await emu.wait_for_bot_messages(cid, 2)
        quick_done = time.monotonic() - began
        answered_slow = [cid for cid in slow if len(emu.bot_texts(cid)) > 1]
        for cid in slow:
            await emu.wait_for_bot_messages(cid, 2)
        print(
            f"quick conversations answered {quick_done:.1f} s after the first slow question; "
            f"slow ones after {time.monotonic() - began:.1f} s"
        )
        assert answered_slow == []
        await rasa.stop()
