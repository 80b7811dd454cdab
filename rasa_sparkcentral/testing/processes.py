"""Start and stop real servers (``rasa run``, the action server, Redis) as child processes.

Used by the test suite, ``scripts/demo.py`` and the benchmarks. Standard library only (plus
aiohttp for asynchronous health polling); it never imports Rasa, so the process using it
stays light and the servers run exactly as a bot developer would run them.

Every process is started in its own session (process group): stopping it sends SIGTERM to
that group, then SIGKILL after a grace period, and never touches anything else. Processes
still running when the interpreter exits are stopped by an ``atexit`` hook, registered when
the first process starts (importing this module registers nothing).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, List, Optional, Union

import aiohttp

from rasa_sparkcentral.protocol import CREDENTIALS_KEY

__all__ = [
    "HttpProbe",
    "ManagedProcess",
    "RedisProbe",
    "ServerStartError",
    "action_server",
    "base_env",
    "children",
    "free_port",
    "rasa_server",
    "redis_lock_store",
    "redis_server",
    "redis_tracker_store",
    "write_credentials",
    "write_endpoints",
]

LOG_TAIL_LINES = 40
LOOPBACK = "127.0.0.1"

StrPath = Union[str, "os.PathLike[str]"]

# The directory holding the ``rasa_sparkcentral`` package: put on the children's PYTHONPATH
# so ``rasa run`` and the action server import this very checkout, installed or not.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class ServerStartError(RuntimeError):
    """A server exited or did not become ready in time. The message ends with its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (all its threads) and of its children,
    running or ended (``rasa run``'s: the channel's SQLite worker), from Linux ``/proc``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime, stime, and the CPU of the children it has waited for
    total = sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:  # it ended meanwhile
            pass
    return total


def children(pid: int) -> List[int]:
    """The pids of a running process's children (from Linux ``/proc``)."""
    found: List[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", encoding="ascii") as listed:
                found += [int(child) for child in listed.read().split()]
        except OSError:
            pass
    return found


def base_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment for a child: ours, unbuffered, quiet TensorFlow, no telemetry."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_ENABLE_ONEDNN_OPTS": "0",
            "RASA_TELEMETRY_ENABLED": "false",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "SANIC_HOST": LOOPBACK,  # rasa_sdk binds to SANIC_HOST (default 0.0.0.0)
        }
    )
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _PACKAGE_PARENT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_PARENT, *paths])
    if extra:
        env.update(extra)
    return env


# --------------------------------------------------------------------------- readiness


# Loopback servers: never route the probe through an http_proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpProbe:
    """Ready when ``GET url`` answers 200."""

    def __init__(self, url: str, request_timeout: float = 2.0) -> None:
        self.url = url
        self.request_timeout = request_timeout

    def __repr__(self) -> str:
        return f"HttpProbe({self.url!r})"

    def check(self) -> bool:
        try:
            with _NO_PROXY_OPENER.open(self.url, timeout=self.request_timeout) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError, ValueError):
            return False

    async def acheck(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                self.url
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False


class RedisProbe:
    """Ready when a ``PING`` over a raw socket answers ``+PONG``."""

    def __init__(self, host: str, port: int, request_timeout: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.request_timeout = request_timeout

    def __repr__(self) -> str:
        return f"RedisProbe({self.host}:{self.port})"

    def check(self) -> bool:
        try:
            with socket.create_connection(
                (self.host, self.port), timeout=self.request_timeout
            ) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    async def acheck(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.request_timeout
            )
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), self.request_timeout)
            return answer.startswith(b"+PONG")
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


Probe = Union[HttpProbe, RedisProbe]


# --------------------------------------------------------------------------- processes

_RUNNING: set[ManagedProcess] = set()  # started and not stopped yet
_AT_EXIT_REGISTERED = False


def _stop_all_at_exit() -> None:
    for process in list(_RUNNING):
        process.stop(grace=5.0)


def _register_at_exit() -> None:
    """Install the exit hook once, when the first process starts."""
    global _AT_EXIT_REGISTERED
    if not _AT_EXIT_REGISTERED:
        atexit.register(_stop_all_at_exit)
        _AT_EXIT_REGISTERED = True


class ManagedProcess:
    """One server process: its command, working directory, environment and log file.

    ``with ManagedProcess(...) as p:`` and ``async with ManagedProcess(...) as p:`` start it,
    wait until its probe answers and stop it on exit. ``start()``, ``wait_ready()`` /
    ``await wait_ready_async()`` and ``stop()`` do the same by hand. Output (stdout and
    stderr) is appended to ``log_path``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: StrPath,
        cwd: Optional[StrPath] = None,
        env: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None,
        url: Optional[str] = None,
        port: Optional[int] = None,
        probe: Optional[Probe] = None,
        ready_timeout: float = 120.0,
        stop_grace: float = 10.0,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = Path(cwd) if cwd is not None else None
        self.env = base_env(env)
        self.name = name or Path(self.argv[0]).name
        self.url = url
        self.port = port
        self.probe: Optional[Probe] = probe or (HttpProbe(url) if url else None)
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ManagedProcess {self.name} pid={self.pid} {state} log={self.log_path}>"

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> ManagedProcess:
        """Start the process (no-op when it runs already). Does not wait for readiness."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        banner = f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n"
        self._log.write(banner.encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.argv,
            cwd=str(self.cwd) if self.cwd is not None else None,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _register_at_exit()
        _RUNNING.add(self)
        return self

    def wait_ready(self, url: Optional[str] = None, timeout: Optional[float] = None) -> None:
        """Block until the probe (or ``GET url``) answers; raise ServerStartError if not."""
        probe = self._probe_for(url)
        deadline = time.monotonic() + (timeout if timeout is not None else self.ready_timeout)
        while True:
            self._raise_if_exited(probe)
            if probe.check():
                return
            if time.monotonic() >= deadline:
                self._fail_timeout(probe, timeout)
            time.sleep(0.2)

    async def wait_ready_async(
        self, url: Optional[str] = None, timeout: Optional[float] = None
    ) -> None:
        """Like :meth:`wait_ready`, without blocking the event loop."""
        probe = self._probe_for(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.ready_timeout)
        while True:
            self._raise_if_exited(probe)
            if await probe.acheck():
                return
            if loop.time() >= deadline:
                self._fail_timeout(probe, timeout)
            await asyncio.sleep(0.2)

    def stop(self, grace: Optional[float] = None) -> Optional[int]:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds. Returns the code."""
        proc = self._proc
        code: Optional[int] = None
        if proc is not None:
            grace = self.stop_grace if grace is None else grace
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait()
            code = proc.returncode
        _RUNNING.discard(self)
        self._close_log()
        return code

    async def stop_async(self, grace: Optional[float] = None) -> Optional[int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.stop, grace)

    def restart(self, timeout: Optional[float] = None) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout=timeout)

    async def restart_async(self, timeout: Optional[float] = None) -> None:
        await self.stop_async()
        self.start()
        await self.wait_ready_async(timeout=timeout)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                tail = deque(log, maxlen=lines)
        except OSError:
            return ""
        return b"".join(tail).decode("utf-8", "replace")

    # context managers

    def __enter__(self) -> ManagedProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ManagedProcess:
        self.start()
        try:
            await self.wait_ready_async()
        except BaseException:
            await self.stop_async()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.stop_async()

    # internals

    def _probe_for(self, url: Optional[str]) -> Probe:
        if url is not None:
            return HttpProbe(url)
        if self.probe is None:
            raise ValueError(f"{self.name}: no readiness probe and no url given")
        return self.probe

    def _raise_if_exited(self, probe: Probe) -> None:
        if self._proc is None:
            raise ServerStartError(f"{self.name} was not started")
        code = self._proc.poll()
        if code is not None:
            self.stop()
            raise ServerStartError(
                f"{self.name} exited with code {code} before {probe} answered\n{self._log_report()}"
            )

    def _fail_timeout(self, probe: Probe, timeout: Optional[float]) -> None:
        seconds = timeout if timeout is not None else self.ready_timeout
        self.stop()
        raise ServerStartError(
            f"{self.name} did not answer {probe} within {seconds:.0f} s\n{self._log_report()}"
        )

    def _log_report(self) -> str:
        return (
            f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n"
            f"{self.log_tail().rstrip()}\n--- end of log ---"
        )

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------------- config files


def _write_yaml(path: StrPath, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as YAML (JSON is YAML, and Rasa's loader reads it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return target


def write_credentials(
    path: StrPath,
    *,
    base_url: str,
    shared_secret: str,
    client_id: Optional[str] = None,
    client_secret: Optional[str] = None,
    rest: bool = True,
    **extra_channel_settings: Any,
) -> Path:
    """A credentials file with the Sparkcentral channel (and Rasa's REST channel).

    ``client_id``/``client_secret`` of None are left out (webhook-only reply mode); any
    other keyword becomes a channel setting (``reply_mode``, ``redis_url``, ...).
    """
    channel: dict[str, Any] = {"shared_secret": shared_secret, "base_url": base_url}
    if client_id is not None:
        channel["client_id"] = client_id
    if client_secret is not None:
        channel["client_secret"] = client_secret
    channel.update(extra_channel_settings)
    credentials: dict[str, Any] = {CREDENTIALS_KEY: channel}
    if rest:
        credentials["rest"] = None
    return _write_yaml(path, credentials)


def write_endpoints(
    path: StrPath,
    *,
    action_url: Optional[str],
    tracker_store: Optional[Mapping[str, Any]] = None,
    lock_store: Optional[Mapping[str, Any]] = None,
    **extra_endpoints: Any,
) -> Path:
    """An endpoints file: action server URL, optional tracker and lock store."""
    endpoints: dict[str, Any] = {}
    if action_url:
        endpoints["action_endpoint"] = {"url": action_url}
    if tracker_store is not None:
        endpoints["tracker_store"] = dict(tracker_store)
    if lock_store is not None:
        endpoints["lock_store"] = dict(lock_store)
    endpoints.update(extra_endpoints)
    return _write_yaml(path, endpoints)


# --------------------------------------------------------------------------- servers


def rasa_server(
    bot_dir: StrPath,
    model_path: StrPath,
    port: int,
    credentials: StrPath,
    endpoints: StrPath,
    log_path: StrPath,
    extra_args: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
    *,
    ready_timeout: float = 180.0,
) -> ManagedProcess:
    """``rasa run --enable-api`` on 127.0.0.1:port (ready when ``GET /`` answers 200)."""
    url = f"http://{LOOPBACK}:{port}"
    argv = [
        sys.executable,
        "-m",
        "rasa",
        "run",
        "--enable-api",
        "-i",
        LOOPBACK,
        "--port",
        str(port),
        "--model",
        str(Path(model_path).resolve()),
        "--credentials",
        str(Path(credentials).resolve()),
        "--endpoints",
        str(Path(endpoints).resolve()),
        *extra_args,
    ]
    return ManagedProcess(
        argv,
        cwd=bot_dir,
        env=env,
        log_path=log_path,
        name=f"rasa run :{port}",
        url=url,
        port=port,
        probe=HttpProbe(f"{url}/"),
        ready_timeout=ready_timeout,
    )


def action_server(
    bot_dir: StrPath,
    port: int,
    log_path: StrPath,
    env: Optional[Mapping[str, str]] = None,
    *,
    actions_module: str = "actions",
    ready_timeout: float = 60.0,
) -> ManagedProcess:
    """``python -m rasa_sdk --actions actions`` in ``bot_dir`` (ready on ``GET /health``)."""
    url = f"http://{LOOPBACK}:{port}"
    argv = [sys.executable, "-m", "rasa_sdk", "--actions", actions_module, "-p", str(port)]
    return ManagedProcess(
        argv,
        cwd=bot_dir,
        env=env,
        log_path=log_path,
        name=f"action server :{port}",
        url=url,
        port=port,
        probe=HttpProbe(f"{url}/health"),
        ready_timeout=ready_timeout,
    )


def redis_server(
    port: int,
    dir: StrPath,
    log_path: StrPath,
    *,
    executable: Optional[str] = None,
    ready_timeout: float = 20.0,
) -> ManagedProcess:
    """A throw-away ``redis-server`` on 127.0.0.1:port, persistence off, files in ``dir``."""
    binary = executable or shutil.which("redis-server")
    if not binary:
        raise ServerStartError(
            "redis-server not found on PATH: install it (`make redis`, or "
            "`sudo apt-get install -y redis-server`)"
        )
    Path(dir).mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(Path(dir).resolve()),
    ]
    return ManagedProcess(
        argv,
        log_path=log_path,
        name=f"redis-server :{port}",
        url=f"redis://{LOOPBACK}:{port}",
        port=port,
        probe=RedisProbe(LOOPBACK, port),
        ready_timeout=ready_timeout,
    )


def redis_tracker_store(port: int, db: int = 0, key_prefix: Optional[str] = None) -> dict[str, Any]:
    """``tracker_store`` endpoint settings for a Redis on 127.0.0.1:port."""
    store: dict[str, Any] = {"type": "redis", "url": LOOPBACK, "port": port, "db": db}
    if key_prefix:
        store["key_prefix"] = key_prefix  # Rasa wants letters and digits only
    return store


def redis_lock_store(port: int, db: int = 1, key_prefix: Optional[str] = None) -> dict[str, Any]:
    """``lock_store`` endpoint settings for a Redis on 127.0.0.1:port."""
    return redis_tracker_store(port, db, key_prefix)
