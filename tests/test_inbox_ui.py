"""Issue 16: the emulator's web inbox in a real headless Chromium, against the real example bot.

Everything is asserted on the page (what a person would read), never on the emulator's API.
Chromium is Debian's (``scripts/ensure-chromium``; ``CHROMIUM=/path`` picks another one),
driven by Playwright without Playwright's own browser downloads. ``INBOX_SCREENSHOT=path``
saves the inbox after the handoff scenario (README's docs/inbox.png).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, async_playwright, expect

from tests.helpers import response_text

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


@pytest_asyncio.fixture(loop_scope="session")
async def inbox(bot: Any, browser: BrowserContext) -> AsyncIterator[Page]:
    """The inbox page of the bot's emulator, connected to its event stream."""
    expect.set_options(timeout=WAIT_MS)
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{bot.emulator.base_url}/_emulator/ui")
    await expect(page.locator("#live")).to_have_text("live")
    try:
        yield page
    finally:
        await page.close()
    assert errors == [], f"the page raised: {errors}"


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


async def test_contact_hands_over_and_the_agent_hands_back(inbox: Page) -> None:
    page = inbox
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

    # the agent's side: in New, with the topics and the handoff moment
    await page.locator("#tabs button[data-queue=new]").click()
    await expect(page.locator(f"#conversation-list li[data-cid='{cid}']")).to_contain_text("Dana")
    await expect(page.locator("#conversation-head")).to_contain_text("queue: new")
    await expect(page.locator("#topics")).to_contain_text("billing")
    await expect(page.locator("#attributes")).to_contain_text("customer_idC-4711")
    await expect(page.locator("#attributes")).to_contain_text("smooch-rtm-browser-languageen-GB")
    handoff = page.locator("#agent-chat .divider.handoff")
    await expect(handoff).to_have_text(re.compile("Handed over to a human agent"))
    # the bot's part comes before the handoff line, in order
    agent_chat = page.locator("#agent-chat")
    lines = await agent_chat.locator(":scope > li").all_text_contents()
    markers = [i for i, line in enumerate(lines) if "Handed over" in line]
    assert len(markers) == 1, lines
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
    if shot:
        await page.screenshot(path=shot)


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
