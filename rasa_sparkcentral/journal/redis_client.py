"""Redis clients for the journal and the outbox: one per running event loop, with short
timeouts, a health check and one retry, and errors turned into ``JournalUnavailable``.

A ``redis.asyncio`` client belongs to the loop that created it; Rasa's loop and the
``webhook_port`` thread's loop each get their own. Every call is also bounded by
``asyncio.wait_for``, so a frozen server gives a quick ``JournalUnavailable``, never a hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from typing import Any, Awaitable, Callable, List, Sequence, Union

from rasa_sparkcentral.journal.base import JournalUnavailable, OutageLog

#: Socket and connect timeout of every Redis call (seconds).
REDIS_TIMEOUT = 1.5
HEALTH_CHECK_INTERVAL = 10

Arg = Union[str, bytes, int, float]


def make_client(url: str, timeout: float = REDIS_TIMEOUT) -> Any:
    import redis.asyncio as redis_asyncio  # optional dependency: extra "redis"
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    # One retry on a broken connection (a pooled connection to a restarted server), none
    # on a timeout: a frozen server would only double the wait.
    return redis_asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, (RedisConnectionError,)),
        retry_on_error=[RedisConnectionError],
    )


class RedisClients:
    """The client of the running loop, created on first use, and guarded calls."""

    def __init__(self, url: str, what: str, *, timeout: float = REDIS_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        # one retry after a timeout, plus connecting: the call's outer bound
        self.call_timeout = 2 * timeout + 1.0
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._outage = OutageLog(what)
        self._shas: dict[str, str] = {}

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = make_client(self.url, self.timeout)
                self._clients[loop] = client
            return client

    async def call(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """``await fn(client)``; any Redis or socket failure raises JournalUnavailable."""
        from redis.exceptions import RedisError

        try:
            result = await asyncio.wait_for(fn(self.client()), self.call_timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as e:
            self._outage.failed(e)
            raise JournalUnavailable(f"redis: {type(e).__name__}: {e}") from e
        self._outage.succeeded()
        return result

    async def eval(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a Lua script by its SHA (loading it once per server)."""
        from redis.exceptions import NoScriptError

        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()

        async def run(client: Any) -> Any:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                return await client.eval(script, len(keys), *keys, *args)

        return await self.call(run)

    async def close(self) -> None:
        """Close this loop's client; other loops' clients are closed on their own loops."""
        current = asyncio.get_running_loop()
        with self._lock:
            clients: List[Any] = list(self._clients.items())
            self._clients.clear()
        for loop, client in clients:
            if loop is current:
                await client.close()
                await client.connection_pool.disconnect()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(client.close(), loop)
