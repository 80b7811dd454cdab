"""Issue 6: the soak benchmark (benchmarks/soak.py) in small: 1,000 deliveries with 10%
repeats and 5% failing REST calls; nothing lost, nothing twice, nothing out of order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rasa_sparkcentral.testing import processes as servers

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.mark.slow
def test_soak_loses_repeats_and_reorders_nothing(trained_model: Path, tmp_path: Path) -> None:
    command = [sys.executable, str(SOAK), "--deliveries", "1000", "--conversations", "40"]
    command += ["--model", str(trained_model), "--log-dir", str(tmp_path)]
    result = subprocess.run(
        command,
        env=servers.base_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]

    def count(name: str) -> int:
        match = re.search(rf"^{name}\s+(\d+)$", result.stdout, re.MULTILINE)
        assert match, f"no {name!r} in the output:\n{result.stdout}"
        return int(match.group(1))

    assert count("deliveries") == 1000
    assert count("replies received") == count("replies expected") == count("unique messages")
    assert count("unique messages") < 1000  # some deliveries were repeats
    assert count("lost") == 0
    assert count("duplicated") == 0
    assert count("out-of-order") == 0
    faults = re.search(r"Sparkcentral: (\d+) faults injected", result.stdout)
    assert faults and int(faults.group(1)) > 0
