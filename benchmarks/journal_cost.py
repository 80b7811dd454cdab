"""The journal's and outbox's cost and size, on SQLite and on a real redis-server.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/journal_cost.py
    PYTHONPATH=$PWD .venv/bin/python benchmarks/journal_cost.py --messages 2000 --conversations 1000

1. cost: µs per record+finish of one message (1 KB body), one at a time (the latency a
   webhook and its turn pay) and 100 conversations at a time (per message, throughput);
   and per outbox put+peek+done of one reply.
2. size: ``--conversations`` conversations with 3 messages each (recorded, finished) and
   2 replies each (put, sent): what the store holds afterwards (only finished keys, kept
   for dedup_ttl), and after those keys expire (compaction).
3. outage (Redis): how long record() takes to raise JournalUnavailable with the server
   frozen (SIGSTOP) and killed (SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from rasa_sparkcentral.journal import (  # noqa: E402
    Journal,
    JournalUnavailable,
    SqliteJournal,
    sqlite_worker,
)
from rasa_sparkcentral.journal.redis_backend import RedisJournal  # noqa: E402
from rasa_sparkcentral.outbox import Outbox, RedisOutbox, SqliteOutbox  # noqa: E402
from rasa_sparkcentral.testing import processes as servers  # noqa: E402

BODY = b"x" * 1024


async def one_message(journal: Journal, cid: str, key: str) -> None:
    await journal.record(key, cid, BODY)
    entry = (await journal.unfinished(cid, limit=1))[0]
    await journal.finish(entry)


async def cost_sequential(journal: Journal, n: int) -> float:
    run = uuid.uuid4().hex[:6]
    start = time.perf_counter()
    for i in range(n):
        await one_message(journal, f"seq-{run}-{i % 50}", f"{run}-{i}")
    return (time.perf_counter() - start) / n * 1e6


async def cost_concurrent(journal: Journal, n: int, width: int = 100) -> float:
    run = uuid.uuid4().hex[:6]
    per = n // width

    async def conversation(c: int) -> None:
        for i in range(per):
            await one_message(journal, f"con-{run}-{c}", f"{run}-{c}-{i}")

    start = time.perf_counter()
    await asyncio.gather(*(conversation(c) for c in range(width)))
    return (time.perf_counter() - start) / (per * width) * 1e6


async def cost_outbox(outbox: Outbox, n: int) -> float:
    run = uuid.uuid4().hex[:6]
    start = time.perf_counter()
    for i in range(n):
        cid = f"out-{run}-{i % 50}"
        await outbox.put(cid, [BODY[:300]], f"{run}-{i}")
        item = await outbox.peek(cid)
        assert item is not None
        await outbox.done(item)
    return (time.perf_counter() - start) / n * 1e6


async def fill(journal: Journal, outbox: Outbox, conversations: int) -> None:
    run = uuid.uuid4().hex[:6]

    async def conversation(c: int) -> None:
        cid = f"soak-{run}-{c}"
        for i in range(3):
            await one_message(journal, cid, f"{run}-{c}-{i}")
            if i < 2:
                await outbox.put(cid, [BODY[:300]], f"{run}-{c}-{i}")
                item = await outbox.peek(cid)
                assert item is not None
                await outbox.done(item)

    for start in range(0, conversations, 100):
        await asyncio.gather(*(conversation(c) for c in range(start, start + 100)))


def sqlite_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def timed_failure(call: Callable[[], Awaitable[Any]]) -> str:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(call(), 30)
    except JournalUnavailable:
        return f"JournalUnavailable after {time.perf_counter() - start:.2f} s"
    except asyncio.TimeoutError:
        return "HUNG (30 s)"
    return f"succeeded after {time.perf_counter() - start:.2f} s"


def open_stores(backend: str, tmp: Path, url: str, tag: str) -> Tuple[Journal, Outbox]:
    if backend == "sqlite":  # as the channel has them: the outbox in the journal's file
        journal = SqliteJournal(tmp / f"{tag}-journal.sqlite3")
        return journal, SqliteOutbox(db=journal.db)
    prefix = f"bench-{tag}"
    return (
        RedisJournal(url, prefix=f"{prefix}:journal"),
        RedisOutbox(url, prefix=f"{prefix}:outbox"),
    )


async def measure_cost(journal: Journal, outbox: Outbox, n: int) -> List[str]:
    await cost_sequential(journal, 200)  # warm up
    seq = [await cost_sequential(journal, n) for _ in range(3)]
    con = [await cost_concurrent(journal, n) for _ in range(3)]
    out = [await cost_outbox(outbox, n) for _ in range(3)]

    def runs(xs: List[float]) -> str:
        return f"{statistics.median(xs):.0f} µs (runs: {', '.join(f'{x:.0f}' for x in xs)})"

    return [
        f"record+unfinished+finish per message, one at a time: {runs(seq)}",
        f"record+unfinished+finish per message, 100 conversations at a time: {runs(con)}",
        f"outbox put+peek+done per reply, one at a time: {runs(out)}",
    ]


async def measure_size_sqlite(journal: SqliteJournal, outbox: SqliteOutbox, n: int) -> List[str]:
    paths = {journal.db.path, outbox.db.path}
    await fill(journal, outbox, n)
    rows = (await journal.db.call(sqlite_worker.query, "SELECT COUNT(*) FROM journal"))[0]
    size = sum(sqlite_size(p) for p in paths)
    lines = [
        f"after {n} conversations (3 messages, 2 replies each): {size / 1e6:.1f} MB on disk "
        f"(journal and outbox, with the WAL), {rows[0]} journal rows (finished keys, no bodies), "
        f"pending {await journal.pending()} + {await outbox.pending()}"
    ]
    journal.dedup_ttl = outbox.dedup_ttl = 0.0  # as if dedup_ttl had passed
    removed = await journal.compact()
    await outbox.compact()
    for db in {journal.db, outbox.db}:
        await db.call(sqlite_worker.query, "PRAGMA wal_checkpoint(TRUNCATE)", alone=True)
    size = sum(sqlite_size(p) for p in paths)
    lines.append(
        f"once dedup_ttl has passed: compact() removed {removed} keys; {size / 1e6:.1f} MB on "
        "disk (freed pages are reused, the file does not grow further; VACUUM shrinks it)"
    )
    return lines


async def measure_size_redis(journal: RedisJournal, outbox: RedisOutbox, n: int) -> List[str]:
    client = journal.redis.client()
    await client.flushdb()
    before = int((await client.info("memory"))["used_memory"])
    await fill(journal, outbox, n)
    used = int((await client.info("memory"))["used_memory"])
    keys = await client.dbsize()
    forever = [k async for k in client.scan_iter(count=1000) if await client.ttl(k) < 0]
    return [
        f"after {n} conversations (3 messages, 2 replies each): {(used - before) / 1e6:.1f} MB "
        f"more Redis memory, {keys} keys; keys without a TTL: {sorted(k.decode() for k in forever)}"
        f" (all others expire after dedup_ttl); pending {await journal.pending()} + "
        f"{await outbox.pending()}"
    ]


async def measure_outage(proc: servers.ManagedProcess, journal: Journal) -> List[str]:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)
    frozen = await timed_failure(lambda: journal.record("o1", "c", b"x"))
    os.kill(proc.pid, signal.SIGCONT)
    os.kill(proc.pid, signal.SIGKILL)
    proc.stop(grace=1.0)
    killed = await timed_failure(lambda: journal.record("o2", "c", b"x"))
    return [
        f"redis frozen (SIGSTOP): record() -> {frozen}",
        f"redis killed (SIGKILL): record() -> {killed}",
    ]


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="  (log) %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="journal-cost-"))
    proc = servers.redis_server(servers.free_port(), tmp / "redis", tmp / "redis.log")
    proc.start()
    proc.wait_ready()
    url = f"{proc.url}/0"
    results: Dict[str, List[str]] = {}
    try:
        for backend in ("sqlite", "redis"):
            journal, outbox = open_stores(backend, tmp, url, "cost")
            await journal.start()
            await outbox.start()
            results[backend] = await measure_cost(journal, outbox, args.messages)
            await journal.close()
            await outbox.close()
            journal, outbox = open_stores(backend, tmp, url, "size")
            await journal.start()
            await outbox.start()
            if isinstance(journal, SqliteJournal) and isinstance(outbox, SqliteOutbox):
                results[backend] += await measure_size_sqlite(journal, outbox, args.conversations)
            elif isinstance(journal, RedisJournal) and isinstance(outbox, RedisOutbox):
                results[backend] += await measure_size_redis(journal, outbox, args.conversations)
                results[backend] += await measure_outage(proc, journal)
            await journal.close()
            await outbox.close()
    finally:
        if proc.running and proc.pid is not None:
            os.kill(proc.pid, signal.SIGCONT)
        proc.stop(grace=2.0)
    for backend, lines in results.items():
        print(f"## {backend}")
        for line in lines:
            print(f"- {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=10_000)
    asyncio.run(main(parser.parse_args()))
