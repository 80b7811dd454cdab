"""Importing our modules on Rasa Open Source 3.6 raises no DeprecationWarning from our code
(the same check runs on Rasa Pro in tests_pro/test_imports_pro.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_every_module_imports_without_deprecation_from_our_code() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "import-all.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"rasa_sparkcentral.channel", "rasa_sparkcentral.actions"} <= set(report["modules"])
    assert report["ours"] == []
    assert result.returncode == 0


def test_warnings_as_errors_for_our_modules() -> None:
    # Rasa installs warning filters of its own when imported: import it (and what our
    # modules import) first, so that ours is the filter in force
    code = (
        "import warnings, rasa.core.channels.channel, rasa_sdk, sanic, aiohttp\n"
        "warnings.filterwarnings('error', category=DeprecationWarning,"
        " module=r'rasa_sparkcentral(\\.|$)')\n"
        "import rasa_sparkcentral.channel, rasa_sparkcentral.actions, rasa_sparkcentral.client\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
