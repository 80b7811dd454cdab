"""The README's advice for Rasa Open Source 3.6 ("What the slots cost on Rasa Open Source
3.6"): the jsonschema it recommends is one Rasa accepts, and its premise holds for the Rasa
and jsonschema this environment installs (Rasa re-checks its own schema against the
2020-12 meta-schema with every answer of the action server)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import Optional

import pytest
from packaging.requirements import Requirement
from rasa.core.actions.action import RemoteAction
from rasa.utils.endpoints import EndpointConfig

from rasa_sparkcentral.doctor import Context, action_answers_advice, check_action_answers
from rasa_sparkcentral.rasa_edition import RasaEdition, installed_rasa, slow_action_answers
from tests.schema_checks import count_schema_checks

README = Path(__file__).resolve().parents[1] / "README.md"


def _advised_version() -> str:
    match = re.search(r'pip install "jsonschema==([0-9][0-9.]*)"', README.read_text("utf-8"))
    assert match is not None, "the README no longer gives the jsonschema pin"
    return match.group(1)


def _rasa_requirement() -> Requirement:
    found = [
        requirement
        for requirement in map(Requirement, importlib.metadata.requires("rasa") or [])
        if requirement.name == "jsonschema" and requirement.marker is None
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_advised_jsonschema_is_one_rasa_accepts() -> None:
    requirement = _rasa_requirement()
    assert requirement.specifier.contains(_advised_version()), str(requirement)
    # what pip picked here, with Rasa Open Source, is a jsonschema the advice is about
    installed = importlib.metadata.version("jsonschema")
    assert requirement.specifier.contains(installed)
    assert slow_action_answers(installed_rasa(), installed)


def test_rasa_re_checks_its_schema_with_every_action_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = count_schema_checks(monkeypatch)
    action = RemoteAction(
        "action_sparkcentral_channel_details", EndpointConfig("http://localhost:5055/webhook")
    )
    answer = {"events": [{"event": "slot", "name": "sparkcentral_vip", "value": True}]}
    for _ in range(3):
        assert action._validate_action_result(answer)
    assert checked == [RemoteAction.action_response_format_spec()] * 3


# -- `rasa-sparkcentral doctor` gives the same advice, as a note (never a failure) ----------


@pytest.mark.parametrize(
    ("edition", "jsonschema_version", "noted"),
    [
        (RasaEdition("rasa", "3.6.21"), "4.17.3", True),
        (RasaEdition("rasa", "3.6.21"), "3.2.0", False),
        (RasaEdition("rasa-pro", "3.21.0"), "4.26.0", False),
        (None, "4.17.3", False),
        (RasaEdition("rasa", "3.6.21"), None, False),
    ],
)
def test_doctor_advises_the_pin_only_where_it_helps(
    edition: Optional[RasaEdition], jsonschema_version: Optional[str], noted: bool
) -> None:
    advice = action_answers_advice(edition, jsonschema_version)
    assert bool(advice) is noted
    if noted:
        assert advice.startswith("rasa 3.6.21 with jsonschema 4.17.3 re-checks its schema")
        assert f'`pip install "jsonschema=={_advised_version()}"`' in advice


def test_doctor_notes_it_for_the_installed_rasa_and_jsonschema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ctx = Context()
    check_action_answers(ctx)
    assert [(c.name, c.ok, c.note) for c in ctx.checks] == [("action answers", None, True)]
    (line,) = capsys.readouterr().out.splitlines()
    rasa, jsonschema_version = (importlib.metadata.version(d) for d in ("rasa", "jsonschema"))
    assert line.startswith(
        f"note action answers: rasa {rasa} with jsonschema {jsonschema_version} "
    )


def test_the_readme_shows_the_note_as_the_doctor_prints_it() -> None:
    advice = action_answers_advice(RasaEdition("rasa", "3.6.21"), "4.17.3")
    assert f"\nnote action answers: {advice}\n" in README.read_text("utf-8")
