"""The example bot's own action: answers from a Sparkcentral contact attribute."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

BROWSER_LANGUAGE_ATTRIBUTE = "smooch-rtm-browser-language"
# Where the logo image lives: a CDN in real life; by default the emulator's asset URL.
LOGO_URL_ENV = "EXAMPLE_BOT_LOGO_URL"
DEFAULT_LOGO_URL = "http://127.0.0.1:8900/_emulator/assets/logo.png"
# Seconds action_tell_language waits first (0: none): a slow action server, for tests.
LANGUAGE_DELAY_ENV = "EXAMPLE_BOT_LANGUAGE_DELAY"
FALLBACK_TEXT = "I can't tell which language you're using, but I'm happy to continue in English."


def browser_language(attributes: Any) -> str | None:
    """The contact's browser language from the `sparkcentral_contact_attributes` slot.

    The slot maps attribute names to values. `smooch-rtm-browser-language` wins; otherwise
    any attribute whose name ends in `browser-language` (other web mediums).
    """
    if not isinstance(attributes, dict):
        return None
    value = attributes.get(BROWSER_LANGUAGE_ATTRIBUTE)
    if isinstance(value, str) and value.strip():
        return value.strip()
    for name, value in sorted(attributes.items(), key=lambda item: str(item[0])):
        if (
            str(name).lower().endswith("browser-language")
            and isinstance(value, str)
            and value.strip()
        ):
            return value.strip()
    return None


class ActionTellLanguage(Action):
    def name(self) -> str:
        return "action_tell_language"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> list[dict[str, Any]]:
        delay = float(os.environ.get(LANGUAGE_DELAY_ENV) or 0)
        if delay > 0:
            await asyncio.sleep(delay)
        language = browser_language(tracker.get_slot("sparkcentral_contact_attributes"))
        if language:
            dispatcher.utter_message(text=f"Your browser language is {language}.")
        else:
            dispatcher.utter_message(text=FALLBACK_TEXT)
        return []


class ActionShowLogo(Action):
    """Says utter_logo with the logo image: the channel uploads it as an attachment."""

    def name(self) -> str:
        return "action_show_logo"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: dict[str, Any],
    ) -> list[dict[str, Any]]:
        url = os.environ.get(LOGO_URL_ENV) or DEFAULT_LOGO_URL
        dispatcher.utter_message(response="utter_logo", image=url)
        return []
