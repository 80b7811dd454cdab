"""``make demo``: one scripted Sparkcentral conversation with the example bot, for real.

Starts the Sparkcentral emulator in this process, the example bot's action server and
``rasa run`` with the Sparkcentral channel as child processes, then plays a contact:
the conversation is assigned to the bot, the contact asks two questions and asks for a
human, and the bot hands the conversation over. Every webhook is signed like
Sparkcentral signs it; every reply goes through the emulated REST API.

Prints the transcript as Sparkcentral recorded it, the conversation's final queue and the
number of OAuth2 token requests. Exits 1 when a reply is missing or wrong. Stops every
process it started, also on Ctrl-C and on errors.

The emulator's web inbox can be watched while it runs (its URL is printed); with
``--keep-open`` (``make demo-ui``) everything stays up after the script until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from rasa_sparkcentral.testing.emulator import (  # noqa: E402
    QUEUE_NEW,
    EmulatorTimeout,
    SparkcentralEmulator,
)
from rasa_sparkcentral.testing.processes import ServerStartError  # noqa: E402
from rasa_sparkcentral.testing.stack import BotStack, bot_stack  # noqa: E402

BOT_DIR = REPO_ROOT / "example_bot"
MODEL = BOT_DIR / "models" / "example_bot.tar.gz"
REPLY_TIMEOUT = 60.0

CONTACT_PROFILE = {
    "id": "0-01e639d0a57-000-516b9710",
    "mediumContactProfileId": "2853168558034488",
    "primaryIdentifier": "Johan",
    "secondaryIdentifier": "",
    "pictureUrl": "https://emulator.sparkcentral.invalid/avatars/johan.png",
    "vip": False,
}
CONTACT_ATTRIBUTES = [
    {"attribute": "smooch-rtm-browser-language", "value": "en-GB", "source": "MEDIUM"}
]

# (what the contact writes, the bot's expected replies); None = the conversation starts.
SCRIPT: list[tuple[Optional[str], list[str]]] = [
    (None, ["Hi! How can I help you today?"]),
    (
        "what are your opening hours?",
        ["We're open Monday to Friday from 9:00 to 18:00, and Saturday from 10:00 to 16:00."],
    ),
    ("what language am I using?", ["Your browser language is en-GB."]),
    (
        "I want to talk to a person",
        ["I'm passing you to one of our human agents. They'll be with you shortly."],
    ),
]


KEEP_OPEN = "--keep-open" in sys.argv[1:]


class DemoFailed(Exception):
    pass


def say(line: str = "") -> None:
    print(line, flush=True)


async def play(emu: SparkcentralEmulator) -> str:
    """Play SCRIPT; return the conversation id. Raises DemoFailed on a wrong reply."""
    conversation_id = ""
    expected_count = 0
    for text, replies in SCRIPT:
        if text is None:
            say("Sparkcentral: CONVERSATION_STARTED for Johan (smooch-rtm, en-GB, not VIP)")
            result = await emu.start_conversation(
                contact_profile=CONTACT_PROFILE,
                contact_attributes=CONTACT_ATTRIBUTES,
                medium="smooch-rtm",
            )
            assert result.conversation_id is not None
            conversation_id = result.conversation_id
        else:
            say(f"contact: {text}")
            result = await emu.contact_says(conversation_id, text)
        if result.status != 200:
            raise DemoFailed(f"the bot answered the webhook with {result.status} {result.text!r}")
        expected_count += len(replies)
        texts = await emu.wait_for_bot_messages(
            conversation_id, expected_count, timeout=REPLY_TIMEOUT
        )
        got = texts[expected_count - len(replies) : expected_count]
        for line in got:
            say(f"bot: {line}")
        if got != replies:
            raise DemoFailed(f"expected the bot to say {replies!r}, it said {got!r}")
    await emu.wait_for_queue(conversation_id, QUEUE_NEW, timeout=REPLY_TIMEOUT)
    return conversation_id


async def run(log_dir: Path) -> int:
    if not MODEL.exists():
        say(f"demo: {MODEL} is missing: run `make train` first")
        return 1
    try:
        async with SparkcentralEmulator() as emu:
            say(f"Sparkcentral emulator: {emu.base_url}")
            say(f"web inbox: {emu.base_url}/_emulator/ui")
            say("starting the action server and rasa run (about 10-20 s)...")
            started = time.monotonic()
            async with bot_stack(
                bot_dir=BOT_DIR,
                model=MODEL,
                log_dir=log_dir,
                emulator=emu,
                rest_channel=True,
                channel_settings={"conversation_started_intent": "greet"},
            ) as stack:
                say(f"ready in {time.monotonic() - started:.1f} s; bot webhook: {emu.webhook_url}")
                say()
                return await converse(stack, log_dir)
    except ServerStartError as e:
        say(f"DEMO FAILED: {e}")
        return 1


async def converse(stack: BotStack, log_dir: Path) -> int:
    """Play the script on a running stack and print what Sparkcentral recorded."""
    emu = stack.emulator
    try:
        conversation_id = await play(emu)
    except (DemoFailed, EmulatorTimeout) as e:
        say()
        say(f"DEMO FAILED: {e}")
        say(f"--- everything Sparkcentral saw ---\n{emu.transcript_text()}")
        say(f"logs: {log_dir}")
        return 1

    conversation = emu.conversations[conversation_id]
    say()
    say(f"--- transcript of {conversation_id}, as Sparkcentral recorded it ---")
    say(emu.transcript_text(conversation_id))
    say("---")
    say(f"final queue: {conversation.queue}")
    say(f"OAuth2 token requests: {emu.token_requests}")
    say(f"logs: {log_dir}")
    if KEEP_OPEN:
        say(f"\nthe stack stays up: open {emu.base_url}/_emulator/ui (Ctrl-C to stop)")
        await asyncio.Event().wait()
    return 0


async def main() -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="sparkcentral-demo-"))
    task = asyncio.ensure_future(run(log_dir))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        say("\ndemo interrupted; every process it started is stopped")
        return 0 if KEEP_OPEN else 130


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
