"""A turn's durable pipeline: what the channel does with an accepted event.

The channel screens the webhook and hands the event here; this room records it in the
``journal`` (before the 200; 503 when it cannot), wakes its conversation in ``ordering``
(in acceptance order, by leases), runs its turn (``inbound`` → Rasa → ``output``) and
queues the replies in the ``outbox`` for the ``sender`` (REST), or answers the webhook
in reply mode "webhook" (``webhook_answer``). It also owns the ``webhook_process``, the
recovery sweep, the health report and the shutdown order. It never imports the channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Tuple

from rasa.core.channels.channel import UserMessage

from rasa_sparkcentral.client import SparkcentralClient
from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.inbound import (
    GivenDetails,
    Inbound,
    channel_details,
    message_metadata,
    session_is_live,
    shown_buttons,
)
from rasa_sparkcentral.journal import (
    Accepted,
    Entry,
    Instance,
    Journal,
    JournalUnavailable,
    SqliteJournal,
    make_journal,
)
from rasa_sparkcentral.ordering import Ordering
from rasa_sparkcentral.outbox import Outbox, make_outbox
from rasa_sparkcentral.output import RestSink, Sink, SparkcentralOutput
from rasa_sparkcentral.protocol import (
    ASSIGNMENT_EVENTS,
    CHANNEL_NAME,
    Event,
    ProtocolError,
    parse_event,
)
from rasa_sparkcentral.recovery import OutboxSink, already_handled
from rasa_sparkcentral.screening import UNAVAILABLE, Answer
from rasa_sparkcentral.sender import ReplySender
from rasa_sparkcentral.state import CONVERSATION_TTL, ChannelState
from rasa_sparkcentral.webhook_answer import WebhookAnswer
from rasa_sparkcentral.webhook_process import WebhookProcess

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
#: While the outbox cannot take a turn's replies, try again after this many seconds.
OUTBOX_RETRY = 1.0


def _is_outage(error: BaseException) -> bool:
    """A store the turn needs could not be reached (rather than Rasa failing on it)."""
    if isinstance(error, (OSError, asyncio.TimeoutError)):
        return True
    kind = type(error)
    return kind.__module__.startswith("redis") and kind.__name__ in (
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
    )


class Turns:
    """Owns the journal, the outbox, the ordering, the sender and the webhook listener:
    accepts events and runs their turns, one conversation at a time, in order."""

    def __init__(
        self,
        settings: Settings,
        client: Optional[SparkcentralClient],
        state: ChannelState,
        inbound: Inbound,
        *,
        journal: Optional[Journal] = None,
        outbox: Optional[Outbox] = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.state = state
        self.inbound = inbound
        self._journal = journal
        self._outbox = outbox
        self._ordering: Optional[Ordering] = None
        self._sender: Optional[ReplySender] = None
        self._listener: Optional[WebhookProcess] = None
        self._sweeper: Optional[asyncio.Task[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._app: Any = None
        self._on_new_message: Optional[OnNewMessage] = None
        #: webhook reply mode: the answers waiting for their turn, by journal key
        self._waiters: Dict[str, Tuple[WebhookAnswer, asyncio.Future[None]]] = {}
        #: keys whose turn started in this process and is not finished yet
        self._attempted: Set[str] = set()
        self.stopping = False
        self.skipped_replays = 0
        #: the channel details each conversation's messages last gave Rasa in full
        self.given_details = GivenDetails(settings.cache_size, CONVERSATION_TTL)

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the Sparkcentral channel is not started")
        return self._journal

    @property
    def listener(self) -> Optional[WebhookProcess]:
        """The ``webhook_port`` listener (None without ``webhook_port``)."""
        return self._listener

    @property
    def ordering(self) -> Ordering:
        if self._ordering is None:
            raise RuntimeError("the Sparkcentral channel is not started")
        return self._ordering

    async def start(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Open the journal and the outbox; serve ``webhook_port`` if set."""
        self._app = app
        self._on_new_message = on_new_message
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        if settings.switch_interval is not None:
            sys.setswitchinterval(settings.switch_interval)
        if self._journal is None or self._outbox is None:
            port = settings.webhook_port or getattr(getattr(app, "state", None), "port", None)
            instance = Instance.create(settings.instance_name, port or None)
            path = Path(settings.journal_path)
            if self._journal is None:
                self._journal = make_journal(
                    settings.redis_url,
                    path=path,
                    instance=instance,
                    dedup_ttl=settings.dedup_ttl,
                    claim_after=settings.claim_after,
                )
            if self._outbox is None:
                # the embedded outbox lives in the journal's file, served by its worker
                # (beside the journal's path if the journal given is not the embedded one)
                journal = self._journal
                self._outbox = make_outbox(
                    settings.redis_url,
                    sqlite=journal.db if isinstance(journal, SqliteJournal) else None,
                    path=path.with_suffix(".outbox.sqlite3"),
                    instance=instance,
                    reply_deadline=settings.reply_deadline,
                    dedup_ttl=settings.dedup_ttl,
                    claim_after=settings.claim_after,
                )
        await self._journal.start()
        await self._outbox.start()
        self._ordering = Ordering(
            self._journal, self._handle, max_concurrent_turns=settings.max_concurrent_turns
        )
        if self.client is not None:
            self._sender = ReplySender(
                self._outbox,
                self.client,
                backoff_base=settings.backoff_base,
                backoff_max=settings.backoff_max,
            )
        if settings.webhook_port:
            self._listener = WebhookProcess(settings, self._journal, self._recorded_by_listener)
            await self._listener.start()

    def start_sweeping(self) -> None:
        """Replay what a previous run left, then keep sweeping (after the server starts)."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    # -- accepting an event -----------------------------------------------------------

    async def accept(self, event: Event, body: bytes) -> Answer:
        """Record the event (200 only once it is durable) and wake its conversation; in
        reply mode "webhook", answer with what its turn produces."""
        key = event.idempotency_key or f"nokey:{uuid.uuid4().hex}"
        conversation_id = event.conversation_id
        waiter: Optional[Tuple[WebhookAnswer, asyncio.Future[None]]] = None
        if self.settings.reply_mode == "webhook":
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            # the contact's message this turn answers: REST applyTags name it
            waiter = (WebhookAnswer(RestSink(self.client, event.message_id), self.settings), done)
            self._waiters[key] = waiter
        try:
            # recorded even if the request is cancelled meanwhile
            outcome = await asyncio.shield(self.journal.record(key, conversation_id, body))
        except JournalUnavailable:
            self._waiters.pop(key, None)
            return UNAVAILABLE
        if outcome is not Accepted.NEW:
            self._waiters.pop(key, None)
            logger.info(
                "A repeated delivery %s for conversation %s (%s)",
                key,
                conversation_id,
                outcome.value,
            )
            waiter = None
        if outcome is not Accepted.DONE:
            self.ordering.wake(conversation_id)
        if waiter is None:
            return 200, {}
        return 200, await waiter[0].answer(conversation_id, waiter[1])

    def _recorded_by_listener(self, conversation_id: str, outcome: Accepted, key: str) -> None:
        """The ``webhook_port`` listener recorded an event (on Rasa's loop)."""
        if outcome is not Accepted.NEW:
            logger.info(
                "A repeated delivery %s for conversation %s (%s)",
                key,
                conversation_id,
                outcome.value,
            )
        if outcome is not Accepted.DONE:
            self.ordering.wake(conversation_id)

    # -- a turn -----------------------------------------------------------------------

    async def _handle(self, entry: Entry) -> None:
        """Run one journal entry's turn, queue its replies, finish it. Raises
        JournalUnavailable to leave it for later."""
        journal = self.journal
        try:
            event = parse_event(entry.body)
        except ProtocolError:
            await journal.finish(entry, failed=True)
            return
        conversation_id = entry.conversation_id
        agent = getattr(getattr(self._app, "ctx", None), "agent", None)
        waiter = self._waiters.pop(entry.key, None)
        replay = entry.accepted_by != journal.instance.token or entry.key in self._attempted
        key = event.idempotency_key
        if replay and key and await already_handled(agent, conversation_id, key):
            logger.info(
                "Conversation %s: %s was handled before (in the tracker); not run again",
                conversation_id,
                entry.key,
            )
            self.skipped_replays += 1
            await journal.finish(entry)
            if waiter is not None and not waiter[1].done():
                waiter[1].set_result(None)
            return
        self._attempted.add(entry.key)
        rest = RestSink(self.client, event.message_id)
        sink: Sink = rest
        if waiter is not None:
            sink = waiter[0]
        elif self._sender is not None:
            sink = OutboxSink(rest, entry.key, self._enqueue_reply)
        output = SparkcentralOutput(self.client, self.state, self.settings, sink)
        failed = False
        try:
            await self.ordering.run_in_slot(self._turn(event, output, agent))
        except JournalUnavailable:
            raise  # the outbox could not take a reply: leave the entry for later
        except Exception as e:
            if _is_outage(e):  # a store (channel state, tracker) is down: run it later
                raise JournalUnavailable(f"{type(e).__name__}: {e}") from e
            failed = True
            logger.exception(
                "Rasa failed to handle %s for conversation %s", event.type, conversation_id
            )
        if waiter is not None:
            if not waiter[1].done():
                waiter[1].set_result(None)
            await waiter[0].send_rest(conversation_id)
        await journal.finish(entry, failed=failed)
        self._attempted.discard(entry.key)

    async def _turn(self, event: Event, output: SparkcentralOutput, agent: Any) -> None:
        conversation_id = event.conversation_id
        details, known = await channel_details(self.state, event)
        given = self.given_details
        # an assignment restarts the conversation (a new session, empty slots): always
        with_details = (
            self.settings.details_in_every_message
            or event.type in ASSIGNMENT_EVENTS
            or given.are_new(details)
        )
        planned = await self.inbound.turn(
            event,
            metadata=message_metadata(details, event, with_details=with_details),
            output=output,
            shown=shown_buttons(self.state, agent, conversation_id, known),
            parse=getattr(agent, "parse_message", None),
            session_is_live=session_is_live(agent, conversation_id),
        )
        for body in planned.actions:
            await output.deliver(conversation_id, body)
        assert self._on_new_message is not None
        for message in planned.messages:
            await self._on_new_message(message)
        if with_details and planned.messages and not self.settings.details_in_every_message:
            given.given(details)  # Rasa has them (a failed turn gives them again)

    async def _enqueue_reply(self, conversation_id: str, body: Dict[str, Any], key: str) -> None:
        """Put one reply into the outbox (waiting out a short outage), then wake the
        conversation's sender."""
        assert self._outbox is not None and self._sender is not None
        encoded = [json.dumps(body).encode()]
        while True:
            try:
                await self._outbox.put(conversation_id, encoded, key)
                break
            except JournalUnavailable:
                if self.ordering.closing:
                    raise
                await asyncio.sleep(OUTBOX_RETRY)
        self._sender.wake(conversation_id)

    # -- recovery, health, shutdown ---------------------------------------------------

    async def sweep(self) -> int:
        """Wake every conversation with unfinished events or unsent replies (on start:
        replay what a previous run left; later: what a dead instance left)."""
        woken = 0
        try:
            for conversation_id in await self.journal.conversations_with_work():
                self.ordering.wake(conversation_id)
                woken += 1
            if self._sender is not None and self._outbox is not None:
                for conversation_id in await self._outbox.conversations_with_work():
                    self._sender.wake(conversation_id)
        except JournalUnavailable:
            pass  # logged by the journal's outage log; next sweep
        return woken

    async def _sweep_forever(self) -> None:
        first = await self.sweep()
        if first:
            logger.info("Replaying the unfinished events of %d conversations", first)
        interval = max(1.0, self.settings.claim_after / 3)
        while not self.stopping:
            await asyncio.sleep(interval)
            await self.sweep()

    async def health(self) -> Dict[str, Any]:
        counts = await self.journal.counts() if self._journal is not None else None
        report: Dict[str, Any] = {"status": "ok", "channel": CHANNEL_NAME}
        if counts is not None:
            report["journal"] = {
                "backend": counts.backend,
                "accepted": counts.accepted,
                "repeats": counts.repeats,
                "finished": counts.finished,
                "replayed": counts.replayed,
                "replay_skipped": self.skipped_replays,
                "failed": counts.failed,
                "unavailable": counts.unavailable,
                "pending": counts.pending,
            }
        if self._outbox is not None:
            try:
                box = await self._outbox.counts()
                report["outbox"] = {
                    "put": box.put,
                    "sent": box.sent,
                    "given_up": box.given_up,
                    "pending": box.pending,
                }
            except JournalUnavailable:
                report["outbox"] = {"pending": -1}
        if self._listener is not None:
            report["webhook_listener"] = {
                "port": self.settings.webhook_port,
                "pid": self._listener.pid,
                "starts": self._listener.starts,
            }
        return report

    @property
    def pending_conversations(self) -> int:
        """Conversations with a turn running here, or replies still being sent."""
        running = self._ordering.pending_conversations if self._ordering is not None else 0
        sending = self._sender.active if self._sender is not None else 0
        return running + sending

    async def stop_taking_work(self) -> None:
        """SIGTERM: unready, new webhooks 503; turns in flight finish within the grace."""
        self.stopping = True
        if self._listener is not None:
            self._listener.set_ready(False)
        if self._ordering is not None:
            await self._ordering.aclose(self.settings.shutdown_grace)

    async def aclose(self) -> None:
        """Close everything; what is unfinished stays in the journal and outbox."""
        self.stopping = True
        if self._listener is not None:
            self._listener.set_ready(False)
            await self._listener.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._ordering is not None and not self._ordering.closing:
            await self._ordering.aclose(self.settings.shutdown_grace)
        if self._sender is not None:
            await self._sender.aclose(self.settings.request_timeout)
        for store in (self._journal, self._outbox):
            if store is not None:
                try:
                    await store.close()
                except Exception as e:
                    logger.debug("closing %s failed: %s", type(store).__name__, e)
        if self.client is not None:
            await self.client.close()
        await self.state.close()
