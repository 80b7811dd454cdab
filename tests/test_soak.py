"""Issue 6: the soak benchmark (benchmarks/soak.py) in small: 1,000 deliveries with 10%
repeats and 5% failing REST calls; nothing lost, nothing twice, nothing out of order."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import run_soak


@pytest.mark.slow
async def test_soak_loses_repeats_and_reorders_nothing(trained_model: Path, tmp_path: Path) -> None:
    result = await run_soak(
        deliveries=1000, conversations=40, model=trained_model, log_dir=tmp_path, say=print
    )
    tally = result.tally
    assert result.ok, (tally.problems[:20], result.unacknowledged[:20])

    assert tally.deliveries == 1000
    assert tally.received == tally.expected == tally.unique
    assert tally.unique < 1000  # some deliveries were repeats
    assert tally.lost == 0
    assert tally.duplicated == 0
    assert tally.out_of_order == 0
    assert result.faults_injected > 0
