"""The custom action README.md shows under "Channel details as slots" runs as printed, on
rasa_sdk, and finds the details on an earlier message when the current one has none."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from rasa_sparkcentral.protocol import METADATA_KEY

README = Path(__file__).resolve().parent.parent / "README.md"


def _route_by_medium() -> Any:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (snippet,) = [b for b in blocks if "class ActionRouteByMedium" in b]
    namespace: Dict[str, Any] = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    return namespace["ActionRouteByMedium"]()


def _tracker(latest: Dict[str, Any], earlier: List[Dict[str, Any]]) -> Tracker:
    events = [
        {"event": "user", "text": "x", "metadata": {METADATA_KEY: block}} for block in earlier
    ]
    events.append({"event": "user", "text": "hi", "metadata": {METADATA_KEY: latest}})
    latest_message = {"text": "hi", "metadata": {METADATA_KEY: latest}}
    return Tracker("c-1", {}, latest_message, events, False, None, {}, "action_listen")


async def _says(tracker: Tracker) -> List[str]:
    dispatcher = CollectingDispatcher()
    assert await _route_by_medium().run(dispatcher, tracker, {}) == []
    return [m["text"] for m in dispatcher.messages]


async def test_the_readme_action_reads_the_details_of_an_earlier_message() -> None:
    whatsapp = {"conversationId": "c-1", "medium": "whatsapp", "channelId": "ch-1"}
    this_message = {"conversationId": "c-1", "messageId": "m-2"}
    thanks = ["Thanks for writing on WhatsApp!"]
    assert await _says(_tracker(this_message, [whatsapp])) == thanks
    assert await _says(_tracker(whatsapp, [])) == thanks
    assert await _says(_tracker(this_message, [{**whatsapp, "medium": "sms"}])) == []
