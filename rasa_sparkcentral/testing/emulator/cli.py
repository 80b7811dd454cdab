"""``sparkcentral-emulator`` / ``python -m rasa_sparkcentral.testing.emulator``.

- ``serve``: run the emulator until Ctrl-C, one line per event.
- ``chat``: run it and chat with the bot as the contact (and as the human agent).

Options also come from the environment: SPARKCENTRAL_EMULATOR_HOST, SPARKCENTRAL_EMULATOR_PORT,
SPARKCENTRAL_WEBHOOK_URL, SPARKCENTRAL_SHARED_SECRET, SPARKCENTRAL_CLIENT_ID,
SPARKCENTRAL_CLIENT_SECRET, SPARKCENTRAL_PLATFORM, SPARKCENTRAL_ORGANIZATION_ID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from typing import Awaitable, Callable, List, Mapping, Optional, Sequence, TextIO, Tuple
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from rasa_sparkcentral.protocol import REPLY_TIMEOUT

from .contact import (
    EVENT_CONVERSATION_DELEGATED,
    EVENT_CONVERSATION_STARTED,
    new_conversation_id,
)
from .http_api import is_token_expiry
from .models import QUEUE_BOT, QUEUE_RESOLVED, EmulatorEvent, TranscriptEntry, WebhookResult
from .server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SHARED_SECRET,
    DEFAULT_WEBHOOK_URL,
    SparkcentralEmulator,
)

CHAT_HELP = (
    "Type a message and press Enter to write as the contact. Commands: /agent <text> "
    "(reply as the human agent), /handback (give the conversation back to the bot), "
    "/new (new conversation), /transcript, /help, /quit."
)


def _env(name: str, default: str, environ: Mapping[str, str]) -> str:
    value = environ.get(name)
    return value if value else default


def build_parser(environ: Optional[Mapping[str, str]] = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("emulator")
    group.add_argument(
        "--host",
        default=_env("SPARKCENTRAL_EMULATOR_HOST", "127.0.0.1", env),
        help="address to listen on (default 127.0.0.1; env SPARKCENTRAL_EMULATOR_HOST)",
    )
    group.add_argument(
        "--port",
        type=int,
        default=int(_env("SPARKCENTRAL_EMULATOR_PORT", "8900", env)),
        help="port to listen on, 0 = any free port (default 8900)",
    )
    group.add_argument(
        "--webhook-url",
        default=_env("SPARKCENTRAL_WEBHOOK_URL", DEFAULT_WEBHOOK_URL, env),
        help=f"the bot's webhook (default {DEFAULT_WEBHOOK_URL})",
    )
    group.add_argument(
        "--shared-secret",
        default=_env("SPARKCENTRAL_SHARED_SECRET", DEFAULT_SHARED_SECRET, env),
        help="hex shared secret used to sign webhooks (env SPARKCENTRAL_SHARED_SECRET)",
    )
    group.add_argument(
        "--client-id",
        default=_env("SPARKCENTRAL_CLIENT_ID", DEFAULT_CLIENT_ID, env),
        help=f"OAuth2 client id the bot must use (default {DEFAULT_CLIENT_ID})",
    )
    group.add_argument(
        "--client-secret",
        default=_env("SPARKCENTRAL_CLIENT_SECRET", DEFAULT_CLIENT_SECRET, env),
        help=f"OAuth2 client secret the bot must use (default {DEFAULT_CLIENT_SECRET})",
    )
    group.add_argument("--token-lifetime", type=float, default=3600.0, help="seconds")
    group.add_argument(
        "--known-topics",
        default=None,
        help="comma-separated topic names that exist; others are ignored (default: all)",
    )
    group.add_argument(
        "--classic",
        action="store_true",
        help="treat sendMessages/setContactAttributes/indicateTyping as unknown fields",
    )
    group.add_argument(
        "--platform",
        choices=("sparkcentral", "hootsuite"),
        default=_env("SPARKCENTRAL_PLATFORM", "sparkcentral", env),
        help="play classic Sparkcentral or Hootsuite Inbox 2.0 (env SPARKCENTRAL_PLATFORM)",
    )
    group.add_argument(
        "--organization-id",
        default=_env("SPARKCENTRAL_ORGANIZATION_ID", "emulator-org", env),
        help="the organization_id the Inbox 2.0 token grant must name",
    )
    group.add_argument(
        "--reply-timeout",
        type=float,
        default=REPLY_TIMEOUT,
        help="seconds a contact message may wait for the bot before a human gets it",
    )
    group.add_argument("--delay", type=float, default=0.0, help="seconds before REST answers")
    group.add_argument(
        "--fail-rate", type=float, default=0.0, help="probability of 503 on REST calls"
    )
    group.add_argument("--seed", type=int, default=0, help="random seed for --fail-rate")

    parser = argparse.ArgumentParser(
        prog="sparkcentral-emulator",
        description="A local Sparkcentral (Virtual Agent API) for Rasa bots.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,chat}")
    sub.required = True
    sub.add_parser(
        "serve",
        parents=[common],
        help="run the emulator until Ctrl-C, printing one line per event",
        description="Run the emulator; drive it over HTTP with the /_emulator/ endpoints.",
    )
    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="chat with the bot as the contact",
        description="Run the emulator and chat with the bot from the terminal. " + CHAT_HELP,
    )
    chat.add_argument("--name", default="Johan", help="the contact's primary identifier")
    chat.add_argument("--vip", action="store_true", help="the contact is a VIP")
    chat.add_argument("--medium", default="smooch-rtm", help="medium id (default smooch-rtm)")
    chat.add_argument("--language", default="en-GB", help="browser language attribute")
    chat.add_argument("--conversation-id", default=None, help="id of the first conversation")
    chat.add_argument(
        "--delegated",
        action="store_true",
        help="assign conversations with CONVERSATION_DELEGATED instead of _STARTED",
    )
    chat.add_argument(
        "--show-calls", action="store_true", help="also print every REST call the bot makes"
    )
    chat.add_argument(
        "--wait-for-bot",
        type=float,
        default=float(_env("SPARKCENTRAL_WAIT_FOR_BOT", "120", env)),
        metavar="SECONDS",
        help="before the first conversation, wait up to this long for the bot's health "
        "check (GET on the webhook URL's folder) to answer 200; 0: do not wait "
        "(default 120; env SPARKCENTRAL_WAIT_FOR_BOT)",
    )
    return parser


def make_emulator(args: argparse.Namespace) -> SparkcentralEmulator:
    topics = None
    if args.known_topics is not None:
        topics = [t.strip() for t in args.known_topics.split(",") if t.strip()]
    emu = SparkcentralEmulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        shared_secret=args.shared_secret,
        webhook_url=args.webhook_url,
        token_lifetime=args.token_lifetime,
        known_topics=topics,
        accept_extended_fields=not args.classic,
        platform=args.platform,
        organization_id=args.organization_id,
        reply_timeout=args.reply_timeout,
    )
    emu.faults.delay = args.delay
    emu.faults.fail_rate = args.fail_rate
    emu.faults.seed = args.seed
    return emu


def _printer(out: TextIO) -> Callable[[str], None]:
    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    return emit


# ---------------------------------------------------------------------------- serve
async def serve(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    say = _printer(out)
    emu = make_emulator(args)

    def on_event(event: EmulatorEvent) -> None:
        say(f"{time.strftime('%H:%M:%S')} {event.line}")

    emu.add_listener(on_event)
    base = await emu.start(args.host, args.port)
    say(f"Sparkcentral emulator listening on {base}")
    say(f"  connector settings: base_url={base} client_id={emu.client_id}")
    say(f"  webhooks are signed with the shared secret and POSTed to {emu.webhook_url}")
    say(f"  start a conversation: curl -X POST {base}/_emulator/conversations")
    say(f"  web inbox: {base}/_emulator/ui")
    say("  press Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: List[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await emu.stop()
        say("emulator stopped")
    return 0


# ---------------------------------------------------------------------------- chat
class _LineReader:
    """Reads lines from a blocking text stream in a daemon thread (``None`` at EOF)."""

    def __init__(self, stream: TextIO) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Optional[str]] = asyncio.Queue()
        self._stream = stream
        thread = threading.Thread(target=self._run, name="emulator-stdin", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            try:
                line: Optional[str] = self._stream.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                line = None
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line)
            except RuntimeError:  # the loop is closed
                return
            if line is None:
                return

    async def readline(self) -> Optional[str]:
        return await self._queue.get()


def format_chat_entry(entry: TranscriptEntry) -> str:
    """How the chat shows a bot, agent or system entry."""
    if entry.sender == "system":
        return entry.text or ""
    parts: List[str] = []
    if entry.text:
        parts.append(entry.text)
    if entry.attachment is not None:
        parts.append(
            f"[attachment: {entry.attachment} ({entry.content_type or '?'}, "
            f"{entry.size if entry.size is not None else '?'} bytes)]"
        )
    return f"{entry.sender}: {' '.join(parts)}"


class ChatSession:
    """The terminal chat: one person plays the contact and the human agent."""

    def __init__(self, emu: SparkcentralEmulator, args: argparse.Namespace, out: TextIO):
        self.emu = emu
        self.args = args
        self.say = _printer(out)
        self.conversation_id: Optional[str] = None
        self._initial_id: Optional[str] = args.conversation_id
        self.event_type = (
            EVENT_CONVERSATION_DELEGATED if args.delegated else EVENT_CONVERSATION_STARTED
        )

    def on_event(self, event: EmulatorEvent) -> None:
        if event.kind == "transcript" and event.entry is not None:
            if event.entry.sender != "contact":
                self.say(format_chat_entry(event.entry))
        elif event.kind == "call" and event.call is not None:
            call = event.call
            # an expired token is refused once, then the bot fetches a new one: normal
            shown = call.status >= 400 and not is_token_expiry(call)
            if self.args.show_calls or shown:
                detail = "" if call.response_json is None else f" {call.response_json}"
                self.say(f"  ({call.method} {call.path} -> {call.status}{detail})")

    def _report(self, result: WebhookResult) -> None:
        if not result.delivered:
            return
        if result.status != 200:
            self.say(f"  (webhook answered {result.status}: {result.text.strip()[:300]})")
        elif result.error:
            self.say(f"  (webhook answer not applied: {result.error})")

    async def _guard(
        self, action: Callable[[], Awaitable[WebhookResult]]
    ) -> Optional[WebhookResult]:
        try:
            result = await action()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.say(
                f"  (could not reach the bot at {self.emu.webhook_url}: "
                f"{type(exc).__name__}: {exc}; is `rasa run` up?)"
            )
            return None
        self._report(result)
        return result

    async def new_conversation(self, *, same_contact: bool = False) -> None:
        profile = None
        attributes = None
        if same_contact and self.conversation_id in self.emu.conversations:
            old = self.emu.conversations[self.conversation_id]
            profile = old.contact_profile
            attributes = old.contact_attributes
        cid = self._initial_id or new_conversation_id()
        self._initial_id = None
        self.conversation_id = cid
        await self._guard(
            lambda: self.emu.start_conversation(
                cid,
                contact_profile=profile,
                contact_attributes=attributes,
                medium=self.args.medium,
                name=self.args.name,
                vip=self.args.vip,
                language=self.args.language,
                event_type=self.event_type,
            )
        )
        self.say(f"(conversation {self.conversation_id})")

    async def handle(self, line: str) -> bool:
        """Handle one input line; False ends the chat."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return True
        command, _, rest = text.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            self.say(CHAT_HELP)
            return True
        if command == "/new":
            self.conversation_id = None
            await self.new_conversation()
            return True
        if self.conversation_id is None:
            await self.new_conversation()
            if self.conversation_id is None:
                return True
        cid: str = self.conversation_id
        if command == "/transcript":
            self.say(self.emu.transcript_text(cid))
            return True
        if command == "/agent":
            if not rest.strip():
                self.say("usage: /agent <text>")
            else:
                self.emu.agent_says(cid, rest.strip())
            return True
        if command == "/handback":
            if self.emu.conversation(cid).queue == QUEUE_BOT:
                self.say("(the bot already has this conversation)")
                return True
            await self._guard(lambda: self.emu.hand_back(cid, self.event_type))
            return True
        if command.startswith("/") and len(command) > 1:
            self.say(f"unknown command {command}. {CHAT_HELP}")
            return True
        conv = self.emu.conversation(cid)
        if conv.queue == QUEUE_RESOLVED:
            self.say("(the conversation was resolved; a new one starts)")
            await self.new_conversation(same_contact=True)
            if self.conversation_id is None or self.conversation_id == cid:
                return True
            cid = self.conversation_id
        result = await self._guard(lambda: self.emu.contact_says(cid, text))
        if result is not None and not result.delivered:
            self.say(
                "(a human agent has this conversation, the bot is not notified: "
                "answer with /agent <text> or give it back with /handback)"
            )
        return True


def health_url(webhook_url: str) -> str:
    """The bot's health check: the webhook URL's folder (``/webhooks/sparkcentral/``)."""
    parts = urlsplit(webhook_url)
    folder = parts.path.rsplit("/", 1)[0] + "/"
    return urlunsplit((parts.scheme, parts.netloc, folder, "", ""))


async def _probe(session: aiohttp.ClientSession, url: str) -> Tuple[bool, str]:
    try:
        async with session.get(url) as response:
            await response.read()
            if response.status == 200:
                return True, "200"
            return False, (
                f"it answered {response.status}: is rasa_sparkcentral.SparkcentralInput in the "
                "credentials file `rasa run` was given, and is the webhook URL right?"
            )
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}; is `rasa run` started?"


async def wait_for_bot(
    webhook_url: str, timeout: float, say: Callable[[str], None], interval: float = 0.5
) -> bool:
    """Poll the bot's health check until it answers 200 (True) or ``timeout`` passes."""
    if timeout <= 0:
        return True
    url = health_url(webhook_url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    client_timeout = aiohttp.ClientTimeout(total=min(5.0, max(timeout, 0.5)))
    async with aiohttp.ClientSession(timeout=client_timeout, trust_env=False) as session:
        up, problem = await _probe(session, url)
        if up:
            return True
        say(f"waiting for the bot at {url} (up to {timeout:g} s; --wait-for-bot 0 skips this)")
        while loop.time() - started < timeout:
            await asyncio.sleep(interval)
            up, problem = await _probe(session, url)
            if up:
                say(f"the bot is up (after {loop.time() - started:.0f} s)")
                return True
    say(f"(the bot at {url} is not up after {timeout:g} s: {problem}; starting anyway)")
    return False


async def chat(
    args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    emu = make_emulator(args)
    session = ChatSession(emu, args, out)
    emu.add_listener(session.on_event)
    base = await emu.start(args.host, args.port)
    session.say(f"Sparkcentral emulator on {base}; the bot's webhook: {emu.webhook_url}")
    session.say(CHAT_HELP)
    reader = _LineReader(stdin)
    try:
        await wait_for_bot(emu.webhook_url, args.wait_for_bot, session.say)
        await session.new_conversation()
        while True:
            line = await reader.readline()
            if line is None or not await session.handle(line):
                break
    finally:
        await emu.stop()
    session.say("bye")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    runner = serve if args.command == "serve" else chat
    try:
        return asyncio.run(runner(args))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is taken
        print(f"sparkcentral-emulator: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a shared secret that is not hex
        print(f"sparkcentral-emulator: {exc}", file=sys.stderr)
        return 2
