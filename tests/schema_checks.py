"""Counts jsonschema's schema checks (Draft 2020-12) during a test: the cost the README's
jsonschema advice is about. Used by tests/ and tests_pro/ (run from the repository root)."""

from __future__ import annotations

from typing import Any, List

import jsonschema
import pytest


def count_schema_checks(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """The schemas checked from now on, in order (each check still runs)."""
    checked: List[Any] = []
    check_schema = jsonschema.Draft202012Validator.check_schema.__func__  # type: ignore[attr-defined]

    def counting(cls: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        checked.append(schema)
        check_schema(cls, schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", classmethod(counting))
    return checked
