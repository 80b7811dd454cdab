"""Our actions under the newest rasa-sdk's ActionExecutor: the OSS suite's action tests
(tests/test_actions.py, loaded from its file so that tests/conftest.py stays out of this
tier) run here unchanged, plus a check that this rasa-sdk really returns the pydantic
``ActionExecutorRunResult`` those tests have to read."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO_ROOT
from rasa_sdk.executor import ActionExecutor


def _load_oss_action_tests() -> object:
    path = REPO_ROOT / "tests" / "test_actions.py"
    spec = importlib.util.spec_from_file_location("oss_test_actions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


oss = _load_oss_action_tests()
# the tests and their fixture, collected here as if defined in this module
globals().update({name: value for name, value in vars(oss).items() if name.startswith("test_")})
executor = vars(oss)["executor"]


async def test_this_rasa_sdk_returns_a_pydantic_result(executor: ActionExecutor) -> None:
    from rasa_sdk.executor import ActionExecutorRunResult

    call = vars(oss)["_call"]("action_resolve_conversation")
    raw = await executor.run(call)
    assert isinstance(raw, ActionExecutorRunResult)
    as_dict = await vars(oss)["run_action"](executor, call)
    assert as_dict is not None
    assert as_dict["responses"][-1]["custom"]["complete"] == "RESOLVED"
    assert [e["event"] for e in as_dict["events"]] == [e["event"] for e in raw.events]
