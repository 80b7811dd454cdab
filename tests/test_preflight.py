"""The channel's start-up check of the action server (``preflight``), against a real
aiohttp server that lists actions the way rasa_sdk does (``GET /actions``)."""

from __future__ import annotations

import logging
from typing import AsyncIterator, Awaitable, Callable, List

import pytest
from aiohttp import web

from rasa_sparkcentral import actions, project_snippets
from rasa_sparkcentral.preflight import (
    REGISTER_FIX,
    actions_url,
    check_actions,
    diagnose,
    our_action_names,
)
from rasa_sparkcentral.testing.processes import free_port

ActionServer = Callable[[List[str]], Awaitable[str]]


@pytest.fixture
async def action_server() -> AsyncIterator[ActionServer]:
    """Starts a server whose ``GET /actions`` lists the given names; gives its
    ``/webhook`` url, as endpoints.yml names it."""
    runners: List[web.AppRunner] = []

    async def start(names: List[str]) -> str:
        async def listed(request: web.Request) -> web.Response:
            return web.json_response([{"name": name} for name in names])

        app = web.Application()
        app.router.add_get("/actions", listed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_our_actions_are_the_action_classes_of_the_actions_module() -> None:
    ours = our_action_names()
    assert set(project_snippets.ACTIONS) <= set(ours)
    assert "action_set_sparkcentral_contact_attributes" in ours
    classes = [getattr(actions, name) for name in actions.__all__ if name.startswith("Action")]
    assert sorted(kind().name() for kind in classes) == ours


def test_the_actions_url_is_the_endpoint_without_webhook() -> None:
    assert actions_url("http://localhost:5055/webhook") == "http://localhost:5055/actions"
    assert actions_url("http://h:1/webhook/") == "http://h:1/actions"
    assert actions_url("http://h:1/base") == "http://h:1/base/actions"


async def test_all_of_ours_registered_is_fine(action_server: ActionServer) -> None:
    url = await action_server([*our_action_names(), "action_other"])
    assert await diagnose([*our_action_names(), "utter_greet"], url) is None


async def test_a_missing_action_of_ours_is_an_error_naming_it(
    action_server: ActionServer,
) -> None:
    registered = [name for name in our_action_names() if name != "action_resolve_conversation"]
    url = await action_server(registered)
    finding = await diagnose(our_action_names(), url)
    assert finding is not None
    assert finding.level == logging.ERROR
    assert "does not register action_resolve_conversation," in finding.message
    assert "action_handoff_to_sparkcentral" not in finding.message
    assert url.replace("/webhook", "/actions") in finding.message
    assert REGISTER_FIX in finding.message
    assert "from rasa_sparkcentral.actions import *" in finding.message


async def test_only_the_actions_the_domain_uses_count(action_server: ActionServer) -> None:
    url = await action_server(["action_sparkcentral_channel_details"])
    assert await diagnose(["action_sparkcentral_channel_details", "utter_greet"], url) is None
    assert await diagnose(["action_mine"], None) is None


async def test_no_action_endpoint_is_an_error_with_the_fix() -> None:
    finding = await diagnose(["action_handoff_to_sparkcentral", "utter_greet"], None)
    assert finding is not None
    assert finding.level == logging.ERROR
    assert "action_handoff_to_sparkcentral" in finding.message
    assert "action_resolve_conversation" not in finding.message
    assert "action_endpoint: url: http://localhost:5055/webhook" in finding.message
    assert "rasa run actions" in finding.message


async def test_an_action_server_that_does_not_answer_is_a_warning_with_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/webhook"
    finding = await diagnose(our_action_names(), url, timeout=2.0)
    assert finding is not None
    assert finding.level == logging.WARNING
    assert url.replace("/webhook", "/actions") + " does not answer" in finding.message
    assert "rasa run actions" in finding.message


async def test_the_check_never_raises_and_gives_up_without_an_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class App:
        ctx = object()

    with caplog.at_level(logging.DEBUG, logger="rasa_sparkcentral"):
        assert await check_actions(App(), wait=0.0) is None
        assert await check_actions(None, wait=0.0) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
