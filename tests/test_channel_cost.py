"""benchmarks/channel_cost.py in small: both channels answer every message of a round
through the real Sanic app, and the report names each channel's CPU per message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_channel_cost_runs_both_channels_and_reports_them() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "channel_cost.py"),
            *("--pairs", "1", "--seconds", "1", "--conversations", "4", "--busy-ms", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rounds = re.findall(r"^  (REST|Sparkcentral) +([\d.]+) msg/s", done.stdout, re.MULTILINE)
    assert [channel for channel, _ in rounds] == ["REST", "Sparkcentral"]
    assert all(float(rate) > 0 for _, rate in rounds)
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"REST \d+ µs, Sparkcentral \d+ µs: the channel adds -?\d+ µs", summary)
