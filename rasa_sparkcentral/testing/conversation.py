"""One contact talking to a running bot through the emulator, one turn at a time.

    convo = await BotConversation.start(emulator, name="Ann", vip=True)
    assert await convo.say("what are your opening hours?") == ["We're open ..."]
    await convo.say("I want a human")
    await convo.expect_handoff()

A turn is over when the bot has done something (sent a message, handed over, set topics...)
and then nothing more for ``settle`` seconds; ``messages=N`` waits for exactly that many
messages instead, which is faster and independent of timing (``messages=0``: do not wait).
A turn that brings nothing within ``timeout`` seconds fails with the transcript.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Set

from .emulator import (
    QUEUE_BOT,
    QUEUE_NEW,
    QUEUE_RESOLVED,
    EmulatorTimeout,
    SparkcentralEmulator,
    WebhookResult,
    new_conversation_id,
)
from .emulator.models import JSONDict

__all__ = ["BotConversation", "TurnError"]

DEFAULT_SETTLE = 1.0
DEFAULT_TIMEOUT = 60.0
_POLL = 0.05


class TurnError(AssertionError):
    """The bot did not take its turn as expected; the message ends with the transcript."""


class BotConversation:
    """A conversation of the emulator's contact with the bot (see the module docstring)."""

    def __init__(
        self,
        emulator: SparkcentralEmulator,
        conversation_id: str,
        *,
        greets: bool = True,
        settle: float = DEFAULT_SETTLE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.emulator = emulator
        self.greets = greets
        """Whether the bot takes a turn when the conversation is assigned to it."""
        self.id = conversation_id
        self.settle = settle
        self.timeout = timeout
        self.greeting: List[str] = []
        """What the bot said when the conversation was assigned to it."""

    @classmethod
    async def start(
        cls,
        emulator: SparkcentralEmulator,
        *,
        greeting: bool = True,
        messages: Optional[int] = None,
        settle: float = DEFAULT_SETTLE,
        timeout: float = DEFAULT_TIMEOUT,
        **contact: Any,
    ) -> BotConversation:
        """Start a conversation (CONVERSATION_STARTED) and wait for the bot's first turn.

        ``contact`` goes to ``emulator.start_conversation`` (``name``, ``vip``,
        ``language``, ``medium``, ``contact_profile``, ...). ``greeting=False``: the bot
        says nothing on a new conversation, do not wait; ``messages=N``: wait for N.
        """
        cid = contact.pop("conversation_id", None) or new_conversation_id()
        result = await emulator.start_conversation(cid, **contact)
        convo = cls(emulator, cid, greets=greeting, settle=settle, timeout=timeout)
        convo._check_delivered(result, "CONVERSATION_STARTED")
        if greeting or messages is not None:
            convo.greeting = await convo._turn(0, 0, messages, "the greeting")
        return convo

    # ------------------------------------------------------------------ what is there
    @property
    def queue(self) -> str:
        """``"bot"``, ``"new"`` (a human agent's) or ``"resolved"``."""
        return self.emulator.conversation(self.id).queue

    @property
    def topics(self) -> Set[str]:
        return set(self.emulator.conversation(self.id).topics)

    @property
    def texts(self) -> List[str]:
        """Every text the bot sent in this conversation, in order."""
        return self.emulator.bot_texts(self.id)

    @property
    def actions(self) -> List[JSONDict]:
        """Every accepted bot action (the JSON bodies), in order."""
        return self.emulator.actions_for(self.id)

    @property
    def contact_attributes(self) -> List[JSONDict]:
        return list(self.emulator.conversation(self.id).contact_attributes)

    @property
    def transcript(self) -> str:
        return self.emulator.transcript_text(self.id)

    # ------------------------------------------------------------------ turns
    async def say(
        self, text: str, *, messages: Optional[int] = None, timeout: Optional[float] = None
    ) -> List[str]:
        """The contact writes ``text``; returns the texts the bot sent in its turn."""
        if self.queue != QUEUE_BOT:
            raise TurnError(
                f"{self.id} is in the {self.queue!r} queue: the bot would not be told "
                f"{text!r}\n--- transcript ---\n{self.transcript}"
            )
        before_actions, before_texts = len(self.actions), len(self.texts)
        result = await self.emulator.contact_says(self.id, text)
        self._check_delivered(result, repr(text))
        return await self._turn(
            before_actions, before_texts, messages, f"an answer to {text!r}", timeout
        )

    async def hand_back(
        self, *, messages: Optional[int] = None, timeout: Optional[float] = None
    ) -> List[str]:
        """A human agent gives the conversation back; returns what the bot said then
        (nothing, without waiting, when the bot does not greet and ``messages`` is None)."""
        before_actions, before_texts = len(self.actions), len(self.texts)
        result = await self.emulator.hand_back(self.id)
        self._check_delivered(result, "the hand-back")
        if not self.greets and messages is None:
            return []
        return await self._turn(before_actions, before_texts, messages, "the hand-back", timeout)

    def agent_says(self, text: str) -> None:
        """A human agent writes to the contact (the bot is not told)."""
        self.emulator.agent_says(self.id, text)

    def agent_resolves(self) -> None:
        """A human agent resolves the conversation (the bot is not told)."""
        self.emulator.agent_resolves(self.id)

    async def expect_handoff(self, timeout: Optional[float] = None) -> None:
        """Wait until the bot handed the conversation to the human agents (queue "new")."""
        await self._expect_queue(QUEUE_NEW, "a handoff to the human agents", timeout)

    async def expect_resolved(self, timeout: Optional[float] = None) -> None:
        """Wait until the bot resolved the conversation (queue "resolved")."""
        await self._expect_queue(QUEUE_RESOLVED, "the conversation resolved", timeout)

    # ------------------------------------------------------------------ internals
    def _check_delivered(self, result: WebhookResult, what: str) -> None:
        if result.error or result.status != 200:
            raise TurnError(
                f"the bot did not take {what} in {self.id}: webhook answered "
                f"{result.status} {result.error or result.text.strip()[:300]}"
            )

    async def _expect_queue(self, queue: str, what: str, timeout: Optional[float]) -> None:
        try:
            await self.emulator.wait_for_queue(self.id, queue, timeout or self.timeout)
        except EmulatorTimeout as exc:
            raise TurnError(
                f"expected {what}, the conversation is in {self.queue!r}\n{exc}"
            ) from None

    async def _turn(
        self,
        before_actions: int,
        before_texts: int,
        messages: Optional[int],
        what: str,
        timeout: Optional[float] = None,
    ) -> List[str]:
        """Wait for the bot's turn and return the texts it sent in it."""
        limit = timeout or self.timeout
        if messages is not None:
            try:
                await self.emulator.wait_for_bot_messages(self.id, before_texts + messages, limit)
            except EmulatorTimeout as exc:
                raise TurnError(f"expected {messages} message(s) for {what}\n{exc}") from None
            return self.texts[before_texts:]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        seen = before_actions
        quiet_since = loop.time()
        while True:
            now = loop.time()
            count = len(self.actions)
            if count != seen:
                seen, quiet_since = count, now
            elif seen > before_actions and now - quiet_since >= self.settle:
                return self.texts[before_texts:]
            if now >= deadline:
                raise TurnError(
                    f"the bot did nothing for {what} within {limit:g}s\n"
                    f"--- transcript ---\n{self.transcript}"
                )
            await asyncio.sleep(_POLL)

    def __repr__(self) -> str:
        return f"<BotConversation {self.id} queue={self.queue!r} texts={len(self.texts)}>"
