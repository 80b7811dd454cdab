"""The Rasa Pro tier (``make test-pro``): run with ``.venv-pro``'s Python 3.11, the newest
rasa-pro and rasa-sdk, Sanic 25 and aiohttp 3.14.

Rasa Pro's engine needs a licence (RASA_LICENSE) to train, serve or handle a message, so
nothing here starts it: this tier checks what needs no engine (imports, our blueprint on
Rasa Pro's Sanic, our actions under rasa-sdk's executor, the emulator, the domain and
flows through Rasa Pro's own loaders and validators).

No DeprecationWarning may come from our code: every test fails when one is raised by a
``rasa_sparkcentral`` module or names one of our functions (Sanic's listener deprecation
names the listener). ``PENDING_DEPRECATIONS`` lists the ones whose fix is known and still
to be merged; ``test_pending_deprecations_are_gone`` keeps that list honest.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List

import pytest

# litellm (imported by Rasa Pro) fetches its model price list at import time unless told not to
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
BOT_DIR = REPO_ROOT / "example_bot"
PACKAGE_DIR = REPO_ROOT / "rasa_sparkcentral"

#: Deprecations in our code whose fix is known but lives in files being rewritten on other
#: branches; each pattern matches the warning's message.
PENDING_DEPRECATIONS: Dict[str, re.Pattern[str]] = {}


def emulator_module() -> ModuleType:
    """The emulator package, wherever this checkout keeps it (one place to change)."""
    return importlib.import_module("rasa_sparkcentral.testing.emulator")


def is_ours(warning: warnings.WarningMessage) -> bool:
    """A warning raised in our package, or one that names our code."""
    filename = os.path.abspath(warning.filename or "")
    if filename.startswith(str(PACKAGE_DIR) + os.sep):
        return True
    return "sparkcentral" in str(warning.message).lower()


def deprecations_from_us(records: List[warnings.WarningMessage]) -> List[str]:
    return [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in records
        if issubclass(w.category, DeprecationWarning) and is_ours(w)
    ]


def _pending(text: str) -> bool:
    return any(p.search(text) for p in PENDING_DEPRECATIONS.values())


@pytest.fixture(autouse=True)
def no_deprecation_from_our_code(recwarn: pytest.WarningsRecorder) -> Iterator[None]:
    yield
    found = [text for text in deprecations_from_us(recwarn.list) if not _pending(text)]
    if found:
        pytest.fail("DeprecationWarning from our code:\n" + "\n".join(found), pytrace=False)
