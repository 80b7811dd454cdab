"""One bot, for real: emulator + action server + ``rasa run`` (+ Redis), wired together.

    async with bot_stack(bot_dir="my_bot", model="my_bot/models/bot.tar.gz") as stack:
        started = await stack.emulator.start_conversation()
        await stack.emulator.wait_for_bot_messages(started.conversation_id, 1)

Start order: the emulator (unless it runs already), ``redis-server`` (when ``redis``, ready
before Rasa connects to it), the action server and ``rasa run`` (started together, then
awaited). The credentials point the channel at the emulator (its base URL, API keys and
shared secret); the emulator's ``webhook_url`` then points at this ``rasa run``.
Stop order, always the same and also after a failed start: ``rasa run`` (nothing sends to
the others any more), the action server, Redis, then the emulator when the stack started it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional, Union

from rasa_sparkcentral.protocol import CREDENTIALS_KEY, WEBHOOK_PATH

from . import processes
from .emulator import SparkcentralEmulator
from .processes import ManagedProcess, StrPath

__all__ = ["BotStack", "bot_stack"]


class BotStack:
    """The servers of one bot; ``await start()`` / ``await stop()``, or use ``bot_stack``.

    - ``channel_settings``: added to (or overriding) the channel's credentials; a value of
      None for ``client_id``/``client_secret`` leaves the key out (webhook-only replies).
    - ``emulator``: the Sparkcentral to talk to. Default: a new one built with
      ``emulator_options``. One that is not running yet is started and stopped here; one
      that runs already is borrowed and left running.
    - ``actions``: True starts the bot's action server (``action_env`` added to its
      environment); a string is the webhook URL of one that runs already; False: none.
    - ``redis``: start a throw-away ``redis-server`` and keep the tracker store (and, with
      ``redis_lock_store``, the lock store) there. ``tracker_store``/``lock_store`` given
      explicitly win.
    - ``rest_channel`` adds Rasa's REST channel; ``extra_credentials`` adds other channels;
      ``credentials_key`` renames ours (a variant class to compare).
    - ``set_webhook``: point the emulator's ``webhook_url`` at this ``rasa run``.
    """

    def __init__(
        self,
        *,
        bot_dir: StrPath,
        model: StrPath,
        log_dir: Optional[StrPath] = None,
        name: str = "rasa",
        channel_settings: Optional[Mapping[str, Any]] = None,
        emulator: Optional[SparkcentralEmulator] = None,
        emulator_options: Optional[Mapping[str, Any]] = None,
        actions: Union[bool, str] = True,
        action_env: Optional[Mapping[str, str]] = None,
        redis: bool = False,
        redis_lock_store: bool = True,
        redis_key_prefix: Optional[str] = None,
        tracker_store: Optional[Mapping[str, Any]] = None,
        lock_store: Optional[Mapping[str, Any]] = None,
        rest_channel: bool = False,
        extra_credentials: Optional[Mapping[str, Any]] = None,
        credentials_key: str = CREDENTIALS_KEY,
        rasa_port: Optional[int] = None,
        rasa_env: Optional[Mapping[str, str]] = None,
        rasa_args: Sequence[str] = (),
        set_webhook: bool = True,
        ready_timeout: float = 180.0,
    ) -> None:
        self.bot_dir = Path(bot_dir)
        self.model = Path(model)
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="sparkcentral-stack-"))
        self.name = name
        self.channel_settings = dict(channel_settings or {})
        self.emulator = emulator or SparkcentralEmulator(**dict(emulator_options or {}))
        self._owns_emulator = not self.emulator.running
        self.actions = actions
        self.action_env = action_env
        self.redis_wanted = redis
        self.redis_lock_store = redis_lock_store
        self.redis_key_prefix = redis_key_prefix
        self.tracker_store = tracker_store
        self.lock_store = lock_store
        self.rest_channel = rest_channel
        self.extra_credentials = dict(extra_credentials or {})
        self.credentials_key = credentials_key
        self.rasa_port = rasa_port
        self.rasa_env = rasa_env
        self.rasa_args = tuple(rasa_args)
        self.set_webhook = set_webhook
        self.ready_timeout = ready_timeout

        self.redis: Optional[ManagedProcess] = None
        self.action: Optional[ManagedProcess] = None
        self._rasa: Optional[ManagedProcess] = None
        self.credentials_path = self.log_dir / name / "credentials.yml"
        #: this stack's embedded journal (kept across a restart of the same stack)
        self.journal_path = self.log_dir / name / f"journal-{uuid.uuid4().hex[:8]}.sqlite3"
        self.endpoints_path = self.log_dir / name / "endpoints.yml"

    # ------------------------------------------------------------------ what it exposes
    @property
    def rasa(self) -> ManagedProcess:
        if self._rasa is None:
            raise RuntimeError("the stack is not started; await stack.start() first")
        return self._rasa

    @property
    def rasa_url(self) -> str:
        url = self.rasa.url
        assert url is not None
        return url

    @property
    def webhook_url(self) -> str:
        """Where this bot's channel takes Sparkcentral's webhooks."""
        return f"{self.rasa_url}{WEBHOOK_PATH}"

    @property
    def action_url(self) -> Optional[str]:
        """The action server's webhook URL, None when the bot runs without one."""
        if isinstance(self.actions, str):
            return self.actions
        if self.action is not None:
            return f"{self.action.url}/webhook"
        return None

    @property
    def processes(self) -> list[ManagedProcess]:
        """The processes this stack started, in stop order."""
        return [p for p in (self._rasa, self.action, self.redis) if p is not None]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> BotStack:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop ``rasa run``, the action server, Redis, then the emulator if it is ours."""
        for process in self.processes:
            await process.stop_async()
        if self._owns_emulator:
            await self.emulator.stop()

    async def _start(self) -> None:
        if self._owns_emulator:
            await self.emulator.start(host=processes.LOOPBACK, port=0)
        tracker_store, lock_store = self.tracker_store, self.lock_store
        if self.redis_wanted:
            port = processes.free_port()
            self.redis = processes.redis_server(
                port, self.log_dir / f"redis-{port}", self.log_dir / "redis.log"
            )
            self.redis.start()
            await self.redis.wait_ready_async()
            prefix = self.redis_key_prefix
            if tracker_store is None:
                tracker_store = processes.redis_tracker_store(port, key_prefix=prefix)
            if lock_store is None and self.redis_lock_store:
                lock_store = processes.redis_lock_store(port, key_prefix=prefix)
        if self.actions is True:
            self.action = processes.action_server(
                self.bot_dir,
                processes.free_port(),
                self.log_dir / "action-server.log",
                env=self.action_env,
            )
            self.action.start()
        self._write_credentials()
        processes.write_endpoints(
            self.endpoints_path,
            action_url=self.action_url,
            tracker_store=tracker_store,
            lock_store=lock_store,
        )
        port = self.rasa_port or processes.free_port()
        self._rasa = processes.rasa_server(
            self.bot_dir,
            self.model,
            port,
            self.credentials_path,
            self.endpoints_path,
            self.log_dir / f"{self.name}.log",
            extra_args=self.rasa_args,
            env=self.rasa_env,
            ready_timeout=self.ready_timeout,
        )
        self._rasa.start()
        waits = [self._rasa.wait_ready_async()]
        if self.action is not None:
            waits.append(self.action.wait_ready_async())
        await asyncio.gather(*waits)
        if self.set_webhook:
            self.emulator.webhook_url = self.webhook_url

    def _write_credentials(self) -> None:
        settings: dict[str, Any] = {
            "base_url": self.emulator.base_url,
            "shared_secret": self.emulator.shared_secret,
            "client_id": self.emulator.client_id,
            "client_secret": self.emulator.client_secret,
        }
        # one embedded journal per bot (two ``rasa run`` in one bot folder cannot share one)
        settings["journal_path"] = str(self.journal_path)
        settings.update(self.channel_settings)
        path = processes.write_credentials(
            self.credentials_path, rest=self.rest_channel, **settings
        )
        if self.credentials_key == CREDENTIALS_KEY and not self.extra_credentials:
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        data[self.credentials_key] = data.pop(CREDENTIALS_KEY)
        data.update(self.extra_credentials)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@asynccontextmanager
async def bot_stack(**options: Any) -> AsyncIterator[BotStack]:
    """``async with bot_stack(bot_dir=..., model=..., ...) as stack``: see ``BotStack``."""
    stack = BotStack(**options)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
