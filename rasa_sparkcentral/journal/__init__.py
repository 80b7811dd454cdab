"""The durable record of accepted webhook events (issue 13): see ``base`` for the promise,
``sqlite_backend`` for the embedded default and ``redis_backend`` for several instances.

    journal = make_journal(settings.redis_url, path=..., instance=Instance.create(port=5005))
    await journal.start()                      # opens the store, releases own orphan leases
    outcome = await journal.record(key, conversation_id, body)   # before answering 200
    lease = await journal.acquire(conversation_id)               # None: someone else runs it
    for entry in await journal.unfinished(conversation_id): ...; await journal.finish(entry)
    await journal.release(lease)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from rasa_sparkcentral.journal.base import (
    CLAIM_AFTER,
    DEDUP_TTL,
    Accepted,
    Entry,
    Instance,
    Journal,
    JournalCounts,
    JournalUnavailable,
)
from rasa_sparkcentral.journal.leases import Lease
from rasa_sparkcentral.journal.sqlite_backend import DEFAULT_PATH, SqliteJournal

__all__ = [
    "CLAIM_AFTER",
    "DEDUP_TTL",
    "DEFAULT_PATH",
    "Accepted",
    "Entry",
    "Instance",
    "Journal",
    "JournalCounts",
    "JournalUnavailable",
    "Lease",
    "SqliteJournal",
    "make_journal",
]


def make_journal(
    redis_url: Optional[str],
    *,
    path: Union[str, Path] = DEFAULT_PATH,
    instance: Optional[Instance] = None,
    dedup_ttl: float = DEDUP_TTL,
    claim_after: float = CLAIM_AFTER,
) -> Journal:
    """Redis when ``redis_url`` is set, else SQLite at ``path``."""
    if redis_url:
        from rasa_sparkcentral.journal.redis_backend import RedisJournal

        return RedisJournal(
            redis_url, instance=instance, dedup_ttl=dedup_ttl, claim_after=claim_after
        )
    return SqliteJournal(path, instance=instance, dedup_ttl=dedup_ttl, claim_after=claim_after)
