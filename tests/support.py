"""Typed handles the fixtures of ``conftest.py`` give to tests (import them from here).

- ``Bot``: the default bot (``bot.emulator``, ``bot.rasa``).
- ``RasaHandle``: one ``rasa run`` with the Sparkcentral channel and its emulator.
- ``BotStarter``: the ``start_bot`` factory; every start goes through ``BotStack``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from rasa_sparkcentral.testing.processes import ManagedProcess
from rasa_sparkcentral.testing.stack import BotStack

REPO_ROOT = Path(__file__).resolve().parent.parent
BOT_DIR = REPO_ROOT / "example_bot"
MODEL_PATH = BOT_DIR / "models" / "example_bot.tar.gz"


@dataclass
class RasaHandle:
    """One ``rasa run`` with the Sparkcentral channel, and the emulator it talks to."""

    stack: BotStack

    @property
    def process(self) -> ManagedProcess:
        return self.stack.rasa

    @property
    def emulator(self) -> SparkcentralEmulator:
        return self.stack.emulator

    @property
    def credentials_path(self) -> Path:
        return self.stack.credentials_path

    @property
    def endpoints_path(self) -> Path:
        return self.stack.endpoints_path

    @property
    def url(self) -> str:
        return self.stack.rasa_url

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port

    @property
    def webhook_url(self) -> str:
        return self.stack.webhook_url

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def running(self) -> bool:
        return self.process.running

    async def stop(self) -> None:
        await self.stack.stop()

    async def restart(self, timeout: Optional[float] = None) -> None:
        """Stop and start again on the same port, with the same files (a Rasa restart)."""
        await self.process.restart_async(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Bot:
    """The default bot: ``.emulator`` (in-process Sparkcentral) and ``.rasa`` (RasaHandle)."""

    emulator: SparkcentralEmulator
    rasa: RasaHandle


_DEFAULT: Any = object()
#: What example_bot/credentials.yml sets beyond keys and URLs; a test overrides any of it.
EXAMPLE_BOT_SETTINGS: Mapping[str, Any] = {"conversation_started_intent": "greet"}


@dataclass
class BotStarter:
    """``await start_bot(**channel_settings)`` starts ``rasa run`` (see ``__call__``)."""

    model_path: Path
    action_url: str
    log_dir: Path
    on_start: Callable[[ManagedProcess], None] = lambda process: None
    handles: list[RasaHandle] = field(default_factory=list)
    own_emulators: list[SparkcentralEmulator] = field(default_factory=list)

    async def new_emulator(self, **kwargs: Any) -> SparkcentralEmulator:
        """A started emulator, stopped at the end of the session."""
        emulator = SparkcentralEmulator(**kwargs)
        await emulator.start(host="127.0.0.1", port=0)
        self.own_emulators.append(emulator)
        return emulator

    async def __call__(
        self,
        *,
        emulator: Optional[SparkcentralEmulator] = None,
        tracker_store: Optional[Mapping[str, Any]] = None,
        lock_store: Optional[Mapping[str, Any]] = None,
        action_url: Optional[str] = _DEFAULT,
        env: Optional[Mapping[str, str]] = None,
        extra_args: Sequence[str] = (),
        set_webhook: bool = True,
        name: Optional[str] = None,
        ready_timeout: float = 180.0,
        **channel_settings: Any,
    ) -> RasaHandle:
        """Start ``rasa run`` with the example bot and return its handle.

        ``emulator``: the Sparkcentral it talks to (default: a new one). Its base URL, API
        keys and shared secret go into credentials; ``channel_settings`` add to or override
        them (``client_id=None`` leaves a key out). With ``set_webhook`` the emulator's
        webhook URL points at this instance afterwards. ``tracker_store``/``lock_store``
        go into endpoints as they are; ``action_url=None`` runs without action server.
        """
        if emulator is None:
            emulator = await self.new_emulator()
        url = self.action_url if action_url is _DEFAULT else action_url
        stack = BotStack(
            bot_dir=BOT_DIR,
            model=self.model_path,
            log_dir=self.log_dir,
            name=name or f"rasa-{len(self.handles) + 1}",
            # the example bot greets on CONVERSATION_STARTED, as its credentials.yml says
            channel_settings={**EXAMPLE_BOT_SETTINGS, **channel_settings},
            emulator=emulator,
            actions=url if url else False,
            tracker_store=tracker_store,
            lock_store=lock_store,
            rest_channel=True,
            rasa_env=env,
            rasa_args=extra_args,
            set_webhook=set_webhook,
            ready_timeout=ready_timeout,
        )
        handle = RasaHandle(stack)
        self.handles.append(handle)
        try:
            await stack.start()
        finally:
            for process in stack.processes:
                self.on_start(process)
        return handle

    async def close(self) -> None:
        for handle in self.handles:
            await handle.stop()
        for emulator in self.own_emulators:
            await emulator.stop()
