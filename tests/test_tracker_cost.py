"""benchmarks/tracker_cost.py in small: the channel's session holds one SlotSet event more
per details slot the example bot declares, and the report prices them per event."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from rasa_sparkcentral.detail_slots import DETAIL_SLOTS

REPO = Path(__file__).resolve().parent.parent


def test_tracker_cost_counts_the_slot_events_and_prices_them() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tracker_cost.py"), "--repeat", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header = re.search(
        r"REST \((\d+) events\) \| with the channel's .* \((\d+) events\)", done.stdout
    )
    assert header is not None, done.stdout
    domain = yaml.safe_load((REPO / "example_bot" / "domain.yml").read_text())
    # the details slots the example bot declares, and the language the first message names
    filled = [s for s in (*DETAIL_SLOTS, "sparkcentral_language") if s in domain["slots"]]
    assert int(header.group(2)) - int(header.group(1)) == len(filled)
    rebuild = re.search(
        r"rebuild from the store: \d+ µs more for \d+ more events, (\d+) µs", done.stdout
    )
    assert rebuild is not None and int(rebuild.group(1)) > 0
