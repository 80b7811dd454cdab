"""The emulator and our REST client on aiohttp 3.14 (the Rasa Pro line's aiohttp)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from conftest import emulator_module

from rasa_sparkcentral.client import Outcome, SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.testing.receiver import emulator_without_bot

emulator = emulator_module()


@pytest.fixture
async def emu() -> AsyncIterator[Any]:
    async with emulator_without_bot() as server:
        yield server


def client_for(emu: Any) -> SparkcentralClient:
    settings = Settings.from_credentials(
        {
            "client_id": emulator.DEFAULT_CLIENT_ID,
            "client_secret": emulator.DEFAULT_CLIENT_SECRET,
            "shared_secret": emulator.DEFAULT_SHARED_SECRET,
            "base_url": emu.base_url,
            "backoff_base": 0.01,
            "backoff_max": 0.02,
            "max_attempts": 3,
        }
    )
    return SparkcentralClient(settings, rng=random.Random(3))


def test_running_on_aiohttp_3_14() -> None:
    assert tuple(int(p) for p in aiohttp.__version__.split(".")[:2]) >= (3, 14)


async def test_client_gets_a_token_and_sends_through_faults(emu: Any) -> None:
    started = await emu.start_conversation()
    assert started.status == 200
    cid = started.conversation_id
    emu.faults.token_fail_next(1).fail_next(1)
    client = client_for(emu)
    try:
        outcome = await client.act(cid, {"sendMessage": {"text": "hello from Pro"}})
    finally:
        await client.close()
    assert outcome is Outcome.DELIVERED
    assert emu.bot_texts(cid) == ["hello from Pro"]
    assert emu.conversation(cid).queue == emulator.QUEUE_BOT
    assert [c.status for c in emu.rest_calls] == [503, 200]
    token_calls = emu.calls_to("/virtual-agent/oauth2/token")
    assert [c.status for c in token_calls] == [503, 200]
    assert token_calls[0].fault is not None
    assert emu.token_requests == 1


# In a fresh interpreter: aiohttp warns about a string request key once per process.
TYPED_KEYS_PROBE = r"""
import asyncio, json, os, warnings
import aiohttp
from conftest import PACKAGE_DIR, emulator_module

async def main():
    emu = emulator_module().SparkcentralEmulator()
    await emu.start()
    emu.faults.token_fail_next(1)
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            async with aiohttp.ClientSession() as http, http.post(
                emu.base_url + "/virtual-agent/oauth2/token", data={"grant_type": "x"}
            ) as response:
                status = response.status
    finally:
        await emu.stop()
    ours = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in records
        if os.path.abspath(w.filename).startswith(str(PACKAGE_DIR) + os.sep)
    ]
    fault = emu.calls_to("/virtual-agent/oauth2/token")[0].fault
    print(json.dumps({"status": status, "fault": fault, "ours": ours}))

asyncio.run(main())
"""


def test_fault_bookkeeping_uses_typed_request_keys() -> None:
    """aiohttp 3.14 warns (NotAppKeyWarning) on string request and app keys."""
    result = subprocess.run(
        [sys.executable, "-c", TYPED_KEYS_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 503
    assert report["fault"] is not None
    assert report["ours"] == []
