"""pytest fixtures that test YOUR bot (registered as the ``sparkcentral_bot`` pytest11 plugin).

- ``sparkcentral_bot`` (session): your bot's action server and ``rasa run`` with the
  Sparkcentral channel, pointed at an emulator (``BotStack``), started once per session.
  ``await sparkcentral_bot.conversation(name="Ann", vip=True)`` gives a ``BotConversation``.
- ``sparkcentral_conversation``: a new conversation with the default contact, per test.
- ``sparkcentral_bot_options`` (session): the ``BotStack`` keyword arguments; override it in
  your ``conftest.py`` to change anything (``action_env``, ``redis=True``...).

Settings (command line first, then the ini file):

- ``--sparkcentral-bot-dir`` / ``sparkcentral_bot_dir``: the bot's folder, relative to the
  rootdir (default: the rootdir);
- ``--sparkcentral-model`` / ``sparkcentral_model``: the model (default: the newest
  ``models/*.tar.gz`` of the bot);
- ``--sparkcentral-train`` / ``sparkcentral_train = true``: ``rasa train`` first. Nothing
  is trained otherwise: without a model the fixture fails and says so;
- ``sparkcentral_channel_settings``: ``key = value`` lines added to the channel's settings.
  By default they come from the bot's ``credentials.yml`` entry, without the API keys, the
  shared secret, ``region`` and ``base_url`` (those are the emulator's), nor ``${VAR}`` values;
- ``sparkcentral_actions``: ``auto`` (default: start the action server when the bot has
  ``actions``), ``false``, or the webhook URL of an action server that runs already.

The async fixtures run in the session's event loop: set ``asyncio_default_fixture_loop_scope``
and ``asyncio_default_test_loop_scope`` to ``session`` (pytest-asyncio >= 0.26).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional

import pytest

from rasa_sparkcentral.protocol import CREDENTIALS_KEY

from . import processes
from .conversation import DEFAULT_SETTLE, DEFAULT_TIMEOUT, BotConversation
from .emulator import SparkcentralEmulator
from .stack import BotStack

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the environment
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["SparkcentralBot", "channel_settings_from_credentials", "newest_model"]

#: Keys of the bot's own credentials entry that the emulator decides.
EMULATOR_KEYS = frozenset({"client_id", "client_secret", "shared_secret", "base_url", "region"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sparkcentral", "Sparkcentral bot tests (rasa-sparkcentral)")
    group.addoption("--sparkcentral-bot-dir", default=None, help="the bot's folder")
    group.addoption("--sparkcentral-model", default=None, help="the model to run")
    group.addoption(
        "--sparkcentral-train", action="store_true", default=None, help="rasa train first"
    )
    parser.addini("sparkcentral_bot_dir", "the bot's folder (default: the rootdir)", default="")
    parser.addini("sparkcentral_model", "the model (default: newest models/*.tar.gz)", default="")
    parser.addini("sparkcentral_train", "rasa train before the session", type="bool", default=False)
    parser.addini(
        "sparkcentral_channel_settings",
        "key = value lines added to the channel's settings",
        type="linelist",
        default=[],
    )
    parser.addini(
        "sparkcentral_actions", "auto, false or an action server's webhook URL", default="auto"
    )


# ---------------------------------------------------------------------------- settings


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name, default=None)  # --sparkcentral-x has the dest sparkcentral_x
    return value if value not in (None, "") else config.getini(name)


def newest_model(bot_dir: Path) -> Optional[Path]:
    """The most recently written ``models/*.tar.gz`` of the bot, None when there is none."""
    models = sorted((bot_dir / "models").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return models[-1] if models else None


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def channel_settings_from_credentials(bot_dir: Path) -> Dict[str, Any]:
    """The bot's own channel settings (credentials.yml) that make sense with the emulator."""
    path = bot_dir / "credentials.yml"
    try:
        import yaml
    except ImportError:  # pragma: no cover - Rasa brings PyYAML
        return {}
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entry = data.get(CREDENTIALS_KEY) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        return {}
    return {
        key: value
        for key, value in entry.items()
        if key not in EMULATOR_KEYS and not (isinstance(value, str) and "${" in value)
    }


def _train(bot_dir: Path, log_dir: Path) -> None:
    log_path = log_dir / "rasa-train.log"
    with open(log_path, "wb") as log:
        result = subprocess.run(
            [sys.executable, "-m", "rasa", "train", "--out", "models"],
            cwd=bot_dir,
            env=processes.base_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-30:])
        pytest.fail(f"rasa train failed in {bot_dir} ({log_path}):\n{tail}", pytrace=False)


def bot_options(config: pytest.Config, log_dir: Path) -> Dict[str, Any]:
    """``BotStack`` keyword arguments from the command line and the ini file."""
    root = Path(str(config.rootpath))
    bot_dir = (root / (_setting(config, "sparkcentral_bot_dir") or ".")).resolve()
    if not (bot_dir / "domain.yml").exists() and not (bot_dir / "domain").is_dir():
        pytest.fail(f"{bot_dir} is not a Rasa project (no domain): set sparkcentral_bot_dir")
    if _setting(config, "sparkcentral_train"):
        _train(bot_dir, log_dir)
    model_setting = _setting(config, "sparkcentral_model")
    model = (root / model_setting).resolve() if model_setting else newest_model(bot_dir)
    if model is None or not model.exists():
        pytest.fail(
            f"no model to run ({model or bot_dir / 'models'}): run `rasa train` in {bot_dir}, "
            "or pass --sparkcentral-train (ini: sparkcentral_train = true)",
            pytrace=False,
        )
    settings = channel_settings_from_credentials(bot_dir)
    for line in config.getini("sparkcentral_channel_settings"):
        key, sep, value = str(line).partition("=")
        if not sep:
            pytest.fail(f"sparkcentral_channel_settings: {line!r} is not key = value")
        settings[key.strip()] = _scalar(value.strip())
    actions_setting = str(config.getini("sparkcentral_actions")).strip()
    actions: Any
    if actions_setting.lower() == "auto":
        actions = (bot_dir / "actions").is_dir() or (bot_dir / "actions.py").is_file()
    elif actions_setting.lower() in ("false", "no", "0", ""):
        actions = False
    else:
        actions = actions_setting
    return {
        "bot_dir": bot_dir,
        "model": model,
        "log_dir": log_dir,
        "channel_settings": settings,
        "actions": actions,
    }


# ---------------------------------------------------------------------------- what tests get


class SparkcentralBot:
    """Your bot, running: ``.emulator``, ``.stack`` and ``await .conversation(...)``."""

    def __init__(self, stack: BotStack) -> None:
        self.stack = stack
        self.settle = DEFAULT_SETTLE
        self.timeout = DEFAULT_TIMEOUT

    @property
    def emulator(self) -> SparkcentralEmulator:
        return self.stack.emulator

    @property
    def greets(self) -> bool:
        """Whether the bot is told about a new conversation (``conversation_started_intent``)."""
        return bool(self.stack.channel_settings.get("conversation_started_intent"))

    async def conversation(
        self,
        *,
        greeting: Optional[bool] = None,
        messages: Optional[int] = None,
        **contact: Any,
    ) -> BotConversation:
        """A new conversation (``name``, ``vip``, ``language``, ``medium``...); when the bot
        greets, its greeting is ``.greeting``."""
        return await BotConversation.start(
            self.emulator,
            greeting=self.greets if greeting is None else greeting,
            messages=messages,
            settle=self.settle,
            timeout=self.timeout,
            **contact,
        )

    def logs(self) -> List[Path]:
        return [p.log_path for p in self.stack.processes]


@pytest.fixture(scope="session")
def sparkcentral_bot_options(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Dict[str, Any]:
    """The ``BotStack`` keyword arguments (override this fixture to change them)."""
    return bot_options(pytestconfig, tmp_path_factory.mktemp("sparkcentral-bot"))


if pytest_asyncio is not None:

    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def sparkcentral_bot(
        sparkcentral_bot_options: Dict[str, Any],
    ) -> AsyncIterator[SparkcentralBot]:
        """Your bot, started once per session (see the module docstring)."""
        stack = BotStack(**sparkcentral_bot_options)
        await stack.start()
        try:
            yield SparkcentralBot(stack)
        finally:
            await stack.stop()

    @pytest_asyncio.fixture(loop_scope="session")
    async def sparkcentral_conversation(sparkcentral_bot: SparkcentralBot) -> BotConversation:
        """A new conversation with the default contact."""
        return await sparkcentral_bot.conversation()

else:  # pragma: no cover - depends on the environment

    @pytest.fixture(scope="session")
    def sparkcentral_bot() -> Any:
        """Needs pytest-asyncio."""
        pytest.fail(
            "the sparkcentral_bot fixture needs pytest-asyncio (pip install pytest-asyncio)"
        )

    @pytest.fixture
    def sparkcentral_conversation() -> Any:
        """Needs pytest-asyncio."""
        pytest.fail("the sparkcentral_conversation fixture needs pytest-asyncio")
