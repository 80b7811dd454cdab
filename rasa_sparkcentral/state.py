"""Per-conversation state the channel keeps: delivery keys seen, the contact's channel
details, and the buttons last shown.

In memory (bounded by size and age) by default; in Redis when a ``redis_url`` is
configured, so that several ``rasa run`` instances behind a load balancer agree.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Dict, Generic, List, Optional, Tuple, TypeVar

V = TypeVar("V")

KEY_PREFIX = "rasa_sparkcentral"
#: How long a conversation's details and buttons are kept without activity.
CONVERSATION_TTL = 30 * 24 * 3600.0


class TTLCache(Generic[V]):
    """An LRU dict with a size bound and a per-entry age bound."""

    def __init__(self, max_size: int, ttl: float) -> None:
        self.max_size = max_size
        self.ttl = ttl
        self._data: OrderedDict[str, Tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Optional[V]:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: V) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def add(self, key: str, value: V) -> bool:
        """Set ``key`` unless it is present; True when it was added."""
        if self.get(key) is not None:
            return False
        self.set(key, value)
        return True

    def pop(self, key: str) -> Optional[V]:
        item = self._data.pop(key, None)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]


class ChannelState:
    """Interface; see ``MemoryState`` and ``RedisState``."""

    async def claim_delivery(self, idempotency_key: str) -> bool:
        """True the first time a delivery key is seen (atomically, across instances)."""
        raise NotImplementedError

    async def save_details(self, conversation_id: str, details: Dict[str, Any]) -> None:
        raise NotImplementedError

    async def load_details(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        raise NotImplementedError

    async def save_buttons(self, conversation_id: str, buttons: List[Dict[str, Any]]) -> None:
        raise NotImplementedError

    async def take_buttons(self, conversation_id: str) -> Optional[List[Dict[str, Any]]]:
        """The buttons last shown in the conversation, forgotten once read."""
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def sizes(self) -> Dict[str, int]:
        return {}


class MemoryState(ChannelState):
    def __init__(self, *, max_size: int, dedup_ttl: float) -> None:
        self._deliveries: TTLCache[bool] = TTLCache(max_size, dedup_ttl)
        self._details: TTLCache[Dict[str, Any]] = TTLCache(max_size, CONVERSATION_TTL)
        self._buttons: TTLCache[List[Dict[str, Any]]] = TTLCache(max_size, CONVERSATION_TTL)

    async def claim_delivery(self, idempotency_key: str) -> bool:
        return self._deliveries.add(idempotency_key, True)

    async def save_details(self, conversation_id: str, details: Dict[str, Any]) -> None:
        self._details.set(conversation_id, details)

    async def load_details(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        return self._details.get(conversation_id)

    async def save_buttons(self, conversation_id: str, buttons: List[Dict[str, Any]]) -> None:
        self._buttons.set(conversation_id, buttons)

    async def take_buttons(self, conversation_id: str) -> Optional[List[Dict[str, Any]]]:
        return self._buttons.pop(conversation_id)

    def sizes(self) -> Dict[str, int]:
        return {
            "deliveries": len(self._deliveries),
            "details": len(self._details),
            "buttons": len(self._buttons),
        }


class RedisState(ChannelState):
    """Shared state in Redis (``redis.asyncio``), keys under ``rasa_sparkcentral:``."""

    def __init__(self, url: str, *, dedup_ttl: float) -> None:
        from rasa_sparkcentral.journal.redis_client import make_client

        # short timeouts, a health check and one retry on a broken pooled connection
        self._redis: Any = make_client(url)
        self._dedup_ttl = max(1, int(dedup_ttl))
        self._conversation_ttl = int(CONVERSATION_TTL)

    @staticmethod
    def _key(kind: str, ident: str) -> str:
        return f"{KEY_PREFIX}:{kind}:{ident}"

    async def claim_delivery(self, idempotency_key: str) -> bool:
        added = await self._redis.set(
            self._key("delivery", idempotency_key), b"1", nx=True, ex=self._dedup_ttl
        )
        return bool(added)

    async def save_details(self, conversation_id: str, details: Dict[str, Any]) -> None:
        await self._redis.set(
            self._key("details", conversation_id),
            json.dumps(details),
            ex=self._conversation_ttl,
        )

    async def load_details(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        raw = await self._redis.get(self._key("details", conversation_id))
        return _load_json_dict(raw)

    async def save_buttons(self, conversation_id: str, buttons: List[Dict[str, Any]]) -> None:
        await self._redis.set(
            self._key("buttons", conversation_id), json.dumps(buttons), ex=self._conversation_ttl
        )

    async def take_buttons(self, conversation_id: str) -> Optional[List[Dict[str, Any]]]:
        raw = await self._redis.getdel(self._key("buttons", conversation_id))
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, list) else None

    async def close(self) -> None:
        await self._redis.aclose() if hasattr(self._redis, "aclose") else await self._redis.close()


def _load_json_dict(raw: Any) -> Optional[Dict[str, Any]]:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


def make_state(redis_url: Optional[str], *, max_size: int, dedup_ttl: float) -> ChannelState:
    if redis_url:
        return RedisState(redis_url, dedup_ttl=dedup_ttl)
    return MemoryState(max_size=max_size, dedup_ttl=dedup_ttl)
