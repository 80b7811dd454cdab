"""Fixtures that start real servers: the example bot's model, action server, Redis and
``rasa run`` with the Sparkcentral channel, talking to an in-process emulator.

Every test that uses one of them is marked ``e2e`` automatically (``-m e2e`` selects them,
``-m "not e2e"`` skips them). The classes they hand out live in ``tests/support.py``.
Server logs live in one temporary directory; when such a test fails its report shows the
log paths and the end of each log.

    async def test_greets(bot):
        emu = bot.emulator
        started = await emu.start_conversation(name="Ann")
        texts = await emu.wait_for_bot_messages(started.conversation_id, 1)

    async def test_webhook_mode(start_bot):
        handle = await start_bot(reply_mode="webhook")   # its own emulator and rasa run
        await handle.emulator.start_conversation()
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from rasa_sparkcentral.testing import processes
from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.support import BOT_DIR, MODEL_PATH, REPO_ROOT, Bot, BotStarter

MODEL_INPUTS = ("config.yml", "domain.yml", "data")

SERVER_FIXTURES = frozenset(
    {
        "trained_model",
        "action_server",
        "asset_host",
        "redis_server",
        "start_bot",
        "bot",
        "server_logs",
    }
)

# Every process the fixtures started, for failure reports.
_STARTED: list[processes.ManagedProcess] = []


# --------------------------------------------------------------------------- markers, reports


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _STARTED and item.get_closest_marker("e2e") is not None:
        parts = []
        for process in _STARTED:
            parts.append(f"{process.name}: {process.log_path}")
            parts.append(process.log_tail(20).rstrip())
        report.sections.append(("server logs (last 20 lines each)", "\n".join(parts)))
    return report


# --------------------------------------------------------------------------- model, servers


def _model_is_stale() -> bool:
    if not MODEL_PATH.exists():
        return True
    built = MODEL_PATH.stat().st_mtime
    for name in MODEL_INPUTS:
        path = BOT_DIR / name
        files = path.rglob("*") if path.is_dir() else [path]
        if any(f.is_file() and f.stat().st_mtime > built for f in files):
            return True
    return False


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory every server fixture writes its logs to."""
    path = tmp_path_factory.mktemp("server-logs")
    print(f"\nserver logs: {path}", file=sys.stderr)
    return path


@pytest.fixture(scope="session")
def trained_model(server_logs: Path) -> Path:
    """example_bot/models/example_bot.tar.gz, trained first when missing or out of date."""
    if _model_is_stale():
        log_path = server_logs / "rasa-train.log"
        with open(log_path, "wb") as log:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rasa",
                    "train",
                    "--fixed-model-name",
                    "example_bot",
                    "--out",
                    str(MODEL_PATH.parent),
                ],
                cwd=BOT_DIR,
                env=processes.base_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
        if result.returncode != 0 or not MODEL_PATH.exists():
            tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-40:])
            pytest.fail(f"rasa train failed ({log_path}):\n{tail}", pytrace=False)
    return MODEL_PATH


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asset_host() -> AsyncIterator[SparkcentralEmulator]:
    """Hosts the images the example bot links to (``asset_host.assets``; remove one to
    make its URL answer 404). An emulator used only as a file server."""
    host = SparkcentralEmulator()
    await host.start(host="127.0.0.1", port=0)
    try:
        yield host
    finally:
        await host.stop()


@pytest.fixture(scope="session")
def action_server(
    server_logs: Path, asset_host: SparkcentralEmulator
) -> Iterator[processes.ManagedProcess]:
    """The example bot's action server (``python -m rasa_sdk --actions actions``); its
    logo image is served by ``asset_host``."""
    env = {"EXAMPLE_BOT_LOGO_URL": f"{asset_host.base_url}/_emulator/assets/logo.png"}
    process = processes.action_server(
        BOT_DIR, processes.free_port(), server_logs / "action-server.log", env=env
    )
    _STARTED.append(process)
    with process:
        yield process


@pytest.fixture(scope="session")
def redis_server(server_logs: Path) -> Iterator[processes.ManagedProcess]:
    """A throw-away Redis on a free port (``.port``; see processes.redis_tracker_store)."""
    port = processes.free_port()
    process = processes.redis_server(port, server_logs / f"redis-{port}", server_logs / "redis.log")
    _STARTED.append(process)
    with process:
        yield process


# --------------------------------------------------------------------------- rasa run


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def start_bot(
    trained_model: Path, action_server: processes.ManagedProcess, server_logs: Path
) -> AsyncIterator[BotStarter]:
    """Factory: ``handle = await start_bot(**channel_settings)``; all stopped at the end."""
    starter = BotStarter(
        model_path=trained_model,
        action_url=f"{action_server.url}/webhook",
        log_dir=server_logs,
        on_start=_STARTED.append,
    )
    try:
        yield starter
    finally:
        await starter.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bot(start_bot: BotStarter) -> Bot:
    """The default bot: emulator + action server + ``rasa run`` with default settings."""
    handle = await start_bot(name="rasa-default")
    return Bot(emulator=handle.emulator, rasa=handle)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def bot_dir() -> Path:
    return BOT_DIR
