"""Rasa Pro checks each answer of the action server with a validator it builds once (no
schema re-check per answer, unlike Rasa Open Source 3.6 under jsonschema 4), so the
doctor's note about pinning jsonschema stays silent here. Imports only: no engine runs."""

from __future__ import annotations

import pytest
from rasa.core.actions.action import RemoteActionJSONValidator

from rasa_sparkcentral.doctor import action_answers_advice
from rasa_sparkcentral.rasa_edition import installed_rasa, installed_version
from tests.schema_checks import count_schema_checks


def test_rasa_pro_does_not_re_check_its_schema_with_every_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked = count_schema_checks(monkeypatch)
    answer = {"events": [{"event": "slot", "name": "sparkcentral_vip", "value": True}]}
    for _ in range(3):
        assert RemoteActionJSONValidator.validate(answer)
    assert checked == []


def test_the_doctor_does_not_advise_the_pin_on_rasa_pro() -> None:
    edition = installed_rasa()
    assert edition is not None and edition.pro
    assert action_answers_advice(edition, installed_version("jsonschema")) == ""
