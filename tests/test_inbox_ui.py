"""Issue 16: the emulator's web inbox in a real headless Chromium, against the real example bot.

Everything is asserted on the page (what a person would read), never on the emulator's API.
Chromium is Debian's (``scripts/ensure-chromium``; ``CHROMIUM=/path`` picks another one),
driven by Playwright without Playwright's own browser downloads.

The handoff scenario, the webhook retries and the timer handovers run on both platforms'
emulator modes (``platform_bot``: classic Sparkcentral with ``allow_successor_fields``, and
Hootsuite Inbox 2.0), so the bot leaves its handoff note. ``INBOX_SCREENSHOT=path`` saves the
inbox after the classic run of the handoff scenario (README's docs/inbox.png).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from rasa_sparkcentral.testing.emulator import SparkcentralEmulator
from tests.helpers import response_text
from tests.support import Bot, BotStarter

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000
"""How long the page may take to show a bot reply (a wait limit, not a timing goal)."""
ORGANIZATION = "org-4711"
#: The channel settings of each platform's bot: both send notes, tags and attributes.
PLATFORM_SETTINGS: Dict[str, Dict[str, Any]] = {
    "sparkcentral": {"platform": "sparkcentral", "allow_successor_fields": True},
    "hootsuite": {"platform": "hootsuite", "organization_id": ORGANIZATION},
}
#: What the top bar says each emulator plays.
PLATFORM_LABELS = {
    "sparkcentral": "Sparkcentral (classic) · successor fields on",
    "hootsuite": f"Hootsuite Inbox 2.0 · organization {ORGANIZATION}",
}
#: A shared secret the bot does not have (the platform's was rotated).
ROTATED_SECRET = "0f" * 32


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"no Chromium at {path}: run scripts/ensure-chromium", pytrace=False)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with an empty profile, for this module's tests."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


@asynccontextmanager
async def inbox_page(
    browser: BrowserContext, emulator: SparkcentralEmulator
) -> AsyncIterator[Page]:
    """The inbox page of ``emulator``, connected to its event stream; it must raise nothing."""
    expect.set_options(timeout=WAIT_MS)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{emulator.base_url}/_emulator/ui")
    await expect(page.locator("#live")).to_have_text("live")
    try:
        yield page
    finally:
        await page.close()
    assert errors == [], f"the page raised: {errors}"


@pytest_asyncio.fixture(loop_scope="session")
async def inbox(bot: Bot, browser: BrowserContext) -> AsyncIterator[Page]:
    """The inbox page of the default bot's emulator."""
    async with inbox_page(browser, bot.emulator) as page:
        yield page


@pytest_asyncio.fixture(
    scope="module", loop_scope="session", params=sorted(PLATFORM_SETTINGS), ids=str
)
async def platform_bot(request: pytest.FixtureRequest, start_bot: BotStarter) -> Bot:
    """The example bot on one platform's emulator, sending the successor fields (notes...).
    Webhook retries wait 0.1, 0.2, 0.4 s (the published rule's shape, shorter)."""
    platform = str(request.param)
    emulator = await start_bot.new_emulator(
        platform=platform, organization_id=ORGANIZATION, webhook_retry_backoff_max=0.4
    )
    handle = await start_bot(
        emulator=emulator, name=f"rasa-inbox-{platform}", **PLATFORM_SETTINGS[platform]
    )
    return Bot(emulator=handle.emulator, rasa=handle)


@pytest_asyncio.fixture(loop_scope="session")
async def platform_inbox(platform_bot: Bot, browser: BrowserContext) -> AsyncIterator[Page]:
    """The inbox page of ``platform_bot``'s emulator."""
    async with inbox_page(browser, platform_bot.emulator) as page:
        yield page


async def start_as(page: Page, name: str, *, vip: bool = False, attributes: str = "") -> str:
    """Fill the contact form, start a conversation; return its id (from the page)."""
    await page.locator("#contact-pick").select_option("")
    await page.locator("#contact-name").fill(name)
    await page.locator("#contact-vip").set_checked(vip)
    await page.locator("#contact-attributes").fill(attributes)
    await page.locator("#start").click()
    selected = page.locator("#conversation-list li.selected")
    await expect(selected).to_contain_text(name)
    return str(await selected.get_attribute("data-cid"))


async def contact_writes(page: Page, text: str) -> None:
    await page.locator("#contact-text").fill(text)
    await page.locator("#contact-text").press("Enter")


def bubbles(page: Page, side: str, sender: str, text: str) -> Any:
    """Chat bubbles of ``sender`` on one side (``contact`` or ``agent``) with that text."""
    return page.locator(f"#{side}-chat .msg.from-{sender}").filter(has_text=text)


def handoffs(page: Page) -> Any:
    """The handoff lines of the agent's side of the conversation."""
    return page.locator("#agent-chat .divider.handoff")


async def test_contact_hands_over_and_the_agent_hands_back(
    platform_inbox: Page, platform_bot: Bot
) -> None:
    page = platform_inbox
    platform = platform_bot.emulator.platform
    await expect(page.locator("#platform")).to_have_text(PLATFORM_LABELS[platform])
    greeting = response_text("utter_greet")
    cid = await start_as(page, "Dana", attributes="customer_id=C-4711")
    await expect(bubbles(page, "contact", "bot", greeting)).to_have_count(1)

    # the contact greets, asks, requests a human
    await contact_writes(page, "hello")
    await expect(page.locator("#contact-chat .msg.mine").filter(has_text="hello")).to_have_count(1)
    await expect(bubbles(page, "contact", "bot", greeting)).to_have_count(2)
    await contact_writes(page, "I have a question about my invoice")
    await expect(bubbles(page, "contact", "bot", response_text("utter_billing"))).to_have_count(1)
    await contact_writes(page, "I want to talk to a person")
    await expect(bubbles(page, "contact", "bot", response_text("utter_handoff"))).to_have_count(1)

    # the agent's side: in New, with the bot's note, the topics and the handoff moment
    await page.locator("#tabs button[data-queue=new]").click()
    await expect(page.locator(f"#conversation-list li[data-cid='{cid}']")).to_contain_text("Dana")
    await expect(page.locator("#conversation-head")).to_contain_text("queue: new")
    await expect(page.locator("#conversation-head .badge.reason")).to_have_text(
        "handed over: by the bot"
    )
    note = page.locator("#notes .note")
    await expect(note).to_have_count(1)
    await expect(note).to_contain_text("Handed over by the virtual agent (Rasa)")
    await expect(note).to_contain_text("Last intent: human_handoff")
    await expect(note).to_contain_text("- I have a question about my invoice (ask_billing)")
    await expect(note).to_contain_text("- I want to talk to a person (human_handoff)")
    await expect(page.locator("#topics")).to_contain_text("billing")
    await expect(page.locator("#attributes")).to_contain_text("customer_idC-4711")
    await expect(page.locator("#attributes")).to_contain_text("smooch-rtm-browser-languageen-GB")
    handoff = page.locator("#agent-chat .divider.handoff")
    await expect(handoff).to_have_text(re.compile("Handed over to a human agent"))
    # the bot's part comes before the handoff line, in order
    # (the note's own line in the chat starts with the same words: find the handoff line)
    rows = page.locator("#agent-chat > li")
    lines = await rows.all_text_contents()
    kinds = await rows.evaluate_all("rows => rows.map((row) => row.className)")
    markers = [i for i, kind in enumerate(kinds) if kind == "divider handoff"]
    assert len(markers) == 1, lines
    assert "Handed over to a human agent" in lines[markers[0]], lines
    marker = markers[0]
    assert any(response_text("utter_handoff") in line for line in lines[:marker]), lines

    # the agent answers: both sides show it
    await page.locator("#agent-text").fill("Hi Dana, Tom from billing here. Sorted!")
    await page.locator("#agent-text").press("Enter")
    await expect(bubbles(page, "agent", "agent", "Tom from billing")).to_have_count(1)
    await expect(bubbles(page, "contact", "agent", "Tom from billing")).to_have_count(1)

    # and hands back (delegate): the bot greets again
    await page.locator("#handback-type").select_option("CONVERSATION_DELEGATED")
    await page.locator("#handback").click()
    await expect(bubbles(page, "contact", "bot", greeting)).to_have_count(3)
    await expect(page.locator("#agent-chat .divider.assigned").last).to_have_text(
        re.compile("CONVERSATION_DELEGATED")
    )
    await expect(page.locator("#conversation-head")).to_contain_text("queue: bot")

    # the event log: signed webhooks with their answers, the bot's REST calls
    log = page.locator("#log-rows")
    await expect(
        log.locator("tr.webhook").filter(has_text="CONVERSATION_DELEGATED")
    ).to_contain_text("200")
    await expect(
        log.locator("tr.webhook").filter(has_text="INBOUND_MESSAGE_RECEIVED")
    ).to_have_count(3)
    await expect(log.locator("tr.rest").filter(has_text='"complete":"HANDOVER"')).to_have_count(1)

    shot = os.environ.get("INBOX_SCREENSHOT")
    if shot and platform == "sparkcentral":
        await page.screenshot(path=shot)


async def test_a_failing_webhook_is_retried_then_handed_over(
    platform_inbox: Page, platform_bot: Bot
) -> None:
    """The published retry rule: the same delivery 3 more times, then the New queue."""
    page = platform_inbox
    emu = platform_bot.emulator
    cid = await start_as(page, "Robin")
    await expect(bubbles(page, "contact", "bot", response_text("utter_greet"))).to_have_count(1)

    # the platform's shared secret is rotated, the bot still has the old one: it answers 401
    secret = emu.shared_secret
    emu.shared_secret = ROTATED_SECRET
    try:
        await contact_writes(page, "what are your opening hours?")
        await expect(handoffs(page)).to_have_text(re.compile(r"webhook failed 4 time\(s\)$"))
    finally:
        emu.shared_secret = secret

    inbound = page.locator("#log-rows tr.webhook").filter(has_text="INBOUND_MESSAGE_RECEIVED")
    await expect(inbound).to_have_count(4)
    await expect(inbound.locator("td.status")).to_have_text(["401"] * 4)
    # the first try, then three retries of the same delivery, each named
    await expect(inbound.first).not_to_have_class(re.compile("retry"))
    retries = inbound.and_(page.locator("tr.retry"))
    await expect(retries.locator("td.what")).to_have_text(
        [re.compile(f"retry {n}$") for n in (1, 2, 3)]
    )
    await expect(inbound.last.locator("td.detail")).to_contain_text("tries: 401, 401, 401, 401")
    # the conversation is a human's now, and the page says why
    await expect(page.locator("#tabs button[data-queue=new]")).to_have_class(re.compile("active"))
    await expect(page.locator(f"#conversation-list li[data-cid='{cid}']")).to_be_visible()
    await expect(page.locator("#conversation-head")).to_contain_text("queue: new")
    await expect(page.locator("#conversation-head .badge.reason")).to_have_text(
        "handed over: webhook failed"
    )


async def test_what_the_bot_leaves_unanswered_is_handed_over(
    platform_inbox: Page, platform_bot: Bot
) -> None:
    """The reply-timeout and first-question rules, while the platform refuses every reply of
    the bot (the emulator's fail rate at 1: each REST call answers 503)."""
    page = platform_inbox
    emu = platform_bot.emulator
    cid = await start_as(page, "Kim")
    await expect(bubbles(page, "contact", "bot", response_text("utter_greet"))).to_have_count(1)

    timers = emu.reply_timeout, emu.delegated_question_timeout
    emu.reply_timeout = emu.delegated_question_timeout = 1.0
    emu.faults.fail_rate = 1.0
    try:
        await contact_writes(page, "what are your opening hours?")
        await expect(handoffs(page)).to_have_text(re.compile(r"no bot reply within 1s$"))
        await expect(page.locator("#conversation-head .badge.reason")).to_have_text(
            "handed over: no bot reply in time"
        )
        # the bot's refused replies are in the log, as faults
        faults = page.locator("#log-rows tr.rest.fault")
        await expect(faults.first.locator("td.status")).to_have_text("503 random")

        # handed back with a delegation, the bot's first question does not arrive either
        await page.locator("#handback-type").select_option("CONVERSATION_DELEGATED")
        await page.locator("#handback").click()
        await expect(page.locator("#agent-chat .divider.assigned").last).to_have_text(
            re.compile("CONVERSATION_DELEGATED")
        )
        await expect(handoffs(page)).to_have_text(
            [re.compile(r"no bot reply within 1s$"), re.compile(r"no first question within 1s$")]
        )
        await expect(page.locator("#conversation-head .badge.reason")).to_have_text(
            "handed over: no first question"
        )
        await expect(page.locator(f"#conversation-list li[data-cid='{cid}']")).to_be_visible()
        await expect(page.locator("#conversation-head")).to_contain_text("queue: new")
    finally:
        emu.reply_timeout, emu.delegated_question_timeout = timers
        emu.faults.fail_rate = 0.0


async def test_buttons_images_and_resolve_as_the_medium_shows_them(inbox: Page) -> None:
    page = inbox
    cid = await start_as(page, "Sam", vip=True)
    await expect(page.locator("#conversation-list li.selected .badge.vip")).to_have_text("VIP")

    # buttons arrive as a numbered list; the contact picks one by its number
    await contact_writes(page, "which plan should I pick")
    choices = page.locator("#contact-chat .choices button")
    await expect(choices).to_have_text(
        [re.compile(r"1\.\s*Basic"), re.compile(r"2\.\s*Pro"), re.compile(r"3\.\s*Enterprise")]
    )
    await choices.nth(1).click()
    await expect(page.locator("#contact-chat .msg.mine").last).to_have_text("2")
    await expect(bubbles(page, "contact", "bot", response_text("utter_plan_pro"))).to_have_count(1)

    # an image the bot uploaded is shown as an image
    await contact_writes(page, "show me your logo")
    image = page.locator("#contact-chat .msg.from-bot img")
    await expect(image).to_have_count(1)
    await expect(image).to_have_js_property("complete", True)
    assert await image.evaluate("img => img.naturalWidth") > 0

    # the agent resolves it: the Resolved queue has it, the contact sees it closed
    await page.locator("#resolve").click()
    await expect(page.locator("#conversation-head")).to_contain_text("queue: resolved")
    await expect(page.locator(f"#conversation-list li[data-cid='{cid}']")).to_be_visible()
    await expect(page.locator("#tabs button[data-queue=resolved]")).to_have_class(
        re.compile("active")
    )
    await expect(page.locator("#contact-chat .system")).to_have_text("Conversation closed")
    await expect(page.locator("#agent-chat .divider.resolved")).to_have_text(
        "Resolved by the agent"
    )

    # the same contact, picked in the form, writes again: a new conversation with the bot
    await page.locator("#contact-pick").select_option(label="Sam")
    await expect(page.locator("#contact-vip")).to_be_checked()
    await expect(page.locator("#contact-name")).to_have_value("Sam")
    await contact_writes(page, "hello")
    selected = page.locator("#conversation-list li.selected")
    await expect(selected).not_to_have_attribute("data-cid", cid)
    await expect(selected).to_contain_text("Sam")
    await expect(page.locator("#tabs button[data-queue=bot]")).to_have_class(re.compile("active"))
    await expect(page.locator("#conversation-head .badge.vip")).to_have_text("VIP")
    await expect(page.locator("#contact-chat .msg.mine")).to_have_text(["hello"])
    await expect(bubbles(page, "contact", "bot", "Welcome back, Sam!")).to_have_count(2)
