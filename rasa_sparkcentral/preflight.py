"""Once ``rasa run`` is up: can the bot's domain run our custom actions?

The domain may name actions of ``rasa_sparkcentral.actions`` (the hand-off, resolving the
conversation, ...). When no action server is configured, or it does not answer, or it does
not register them, Rasa only fails when a conversation reaches them. This check says so
once, at start, with the fix. It never raises and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

import aiohttp

logger = logging.getLogger(__name__)

#: How long to wait for Rasa to load its model before giving up on the check.
AGENT_WAIT = 120.0
AGENT_POLL = 0.5
#: ``GET <action server>/actions`` gets this many seconds.
HTTP_TIMEOUT = 3.0
ENDPOINT_FIX = (
    "add `action_endpoint: url: http://localhost:5055/webhook` to endpoints.yml "
    "and start the action server with `rasa run actions`"
)
REGISTER_FIX = (
    "add `from rasa_sparkcentral.actions import *  # noqa: F401,F403` to your actions "
    "package (actions/actions.py) and restart `rasa run actions`"
)


@dataclass(frozen=True)
class Finding:
    """What the check found wrong: a logging level and the line to log."""

    level: int
    message: str


def our_action_names() -> List[str]:
    """The names of the actions ``rasa_sparkcentral.actions`` defines."""
    from rasa_sdk import Action

    from rasa_sparkcentral import actions

    names: List[str] = []
    for value in vars(actions).values():
        if (
            isinstance(value, type)
            and issubclass(value, Action)
            and value.__module__ == actions.__name__
            and not inspect.isabstract(value)
        ):
            names.append(str(value().name()))
    return sorted(names)


def actions_url(action_endpoint_url: str) -> str:
    """Where rasa_sdk lists its actions: the endpoint url without ``/webhook``."""
    base = action_endpoint_url.rstrip("/")
    if base.endswith("/webhook"):
        base = base[: -len("/webhook")]
    return f"{base}/actions"


async def registered_actions(url: str, timeout: float = HTTP_TIMEOUT) -> List[str]:
    """The action names the action server lists; raises when it cannot be asked."""
    limit = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=limit) as session, session.get(url) as answer:
        answer.raise_for_status()
        listed = await answer.json(content_type=None)
    return [str(item.get("name")) for item in listed if isinstance(item, dict)]


async def diagnose(
    domain_actions: Iterable[str],
    action_endpoint_url: Optional[str],
    *,
    timeout: float = HTTP_TIMEOUT,
) -> Optional[Finding]:
    """What is wrong with running our actions that the domain names (None: nothing)."""
    ours = [name for name in our_action_names() if name in set(domain_actions)]
    if not ours:
        return None
    named = ", ".join(ours)
    if not action_endpoint_url:
        return Finding(
            logging.ERROR,
            f"The domain uses {named} but endpoints.yml has no action_endpoint, so these "
            f"actions fail when a conversation reaches them: {ENDPOINT_FIX}",
        )
    url = actions_url(action_endpoint_url)
    try:
        listed = set(await registered_actions(url, timeout))
    except Exception as e:  # any failure to ask counts as "does not answer"
        return Finding(
            logging.WARNING,
            f"The action server at {url} does not answer ({type(e).__name__}: {e}); "
            f"the domain uses {named}: start it with `rasa run actions`",
        )
    missing = [name for name in ours if name not in listed]
    if not missing:
        return None
    return Finding(
        logging.ERROR,
        f"The action server at {url} does not register {', '.join(missing)}, which the "
        f"domain uses: {REGISTER_FIX}",
    )


async def _loaded_agent(app: Any, wait: float, poll: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        agent = getattr(getattr(app, "ctx", None), "agent", None)
        ready = getattr(agent, "is_ready", None)
        loaded = ready() if callable(ready) else agent is not None
        if loaded and getattr(agent, "domain", None) is not None:
            return agent
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(poll)


async def check_actions(
    app: Any, *, wait: float = AGENT_WAIT, poll: float = AGENT_POLL
) -> Optional[Finding]:
    """Wait (bounded) for Rasa's agent and its domain, then log what ``diagnose``
    finds, once. Never raises."""
    try:
        agent = await _loaded_agent(app, wait, poll)
        if agent is None:
            logger.debug("No model loaded; the action server check is skipped")
            return None
        endpoint = getattr(agent, "action_endpoint", None)
        finding = await diagnose(
            list(getattr(agent.domain, "user_actions", []) or []),
            getattr(endpoint, "url", None) if endpoint is not None else None,
        )
    except asyncio.CancelledError:
        raise
    except Exception as e:
        logger.debug("The action server check failed: %s: %s", type(e).__name__, e)
        return None
    if finding is not None:
        logger.log(finding.level, finding.message)
    return finding
