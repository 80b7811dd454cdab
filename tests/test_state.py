import time

from rasa_sparkcentral.state import MemoryState, TTLCache


def test_ttl_cache_bounds_size() -> None:
    cache: TTLCache[int] = TTLCache(max_size=3, ttl=60)
    for i in range(10):
        cache.set(str(i), i)
    assert len(cache) == 3
    assert cache.get("0") is None and cache.get("9") == 9


def test_ttl_cache_expires(monkeypatch) -> None:
    cache: TTLCache[int] = TTLCache(max_size=3, ttl=5)
    cache.set("a", 1)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 6)
    assert cache.get("a") is None
    assert cache.add("a", 2)


async def test_memory_state_claims_once_and_pops_buttons() -> None:
    state = MemoryState(max_size=100, dedup_ttl=60)
    assert await state.claim_delivery("k")
    assert not await state.claim_delivery("k")
    await state.save_buttons("c", [{"title": "a", "payload": "/a"}])
    assert await state.take_buttons("c") == [{"title": "a", "payload": "/a"}]
    assert await state.take_buttons("c") is None
    await state.save_details("c", {"conversationId": "c"})
    assert await state.load_details("c") == {"conversationId": "c"}
    assert state.sizes() == {"deliveries": 1, "details": 1, "buttons": 0}
