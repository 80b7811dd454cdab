"""The example bot's two domains: the Rasa Open Source spelling (trained by the e2e
fixtures) and the Rasa Pro spelling generated from it by scripts/pro-domain.py (loaded by
Rasa Pro's Domain in tests_pro/)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rasa.shared.core.domain import Domain, InvalidDomain

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "pro-domain.py"
OSS_DOMAIN = REPO_ROOT / "example_bot" / "domain.yml"
PRO_DOMAIN = REPO_ROOT / "example_bot" / "pro" / "domain.yml"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pro_domain", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_pro_domain_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_rewrites_only_the_mapping_lines() -> None:
    oss = """slots:
  a:
    type: any
    mappings:
      - type: custom
        action: action_fill   # comment kept
  b:
    type: list
    mappings:
      - type: custom
  c:
    type: text
    mappings:
      - type: from_text
        action: not_a_mapping_key_here
responses:
  utter_x:
    - text: "type: custom"
"""
    pro = load_script().to_pro(oss, "in.yml")
    body = pro.split("\n", 3)[3]
    assert body == oss.replace(
        "      - type: custom\n        action: action_fill   # comment kept\n",
        "      - type: controlled\n        run_action_every_turn: action_fill\n",
    ).replace(
        "  b:\n    type: list\n    mappings:\n      - type: custom\n",
        "  b:\n    type: list\n    mappings:\n      - type: controlled\n",
    )
    assert pro.startswith("# GENERATED from in.yml")


def test_check_reports_a_stale_target(tmp_path: Path) -> None:
    target = tmp_path / "domain.yml"
    target.write_text("stale\n", encoding="utf-8")
    script = load_script()
    assert script.main([str(OSS_DOMAIN), str(target), "--check"]) == 1
    assert script.main([str(OSS_DOMAIN), str(target)]) == 0
    assert script.main([str(OSS_DOMAIN), str(target), "--check"]) == 0
    assert target.read_text(encoding="utf-8") == PRO_DOMAIN.read_text(encoding="utf-8")


def test_rasa_open_source_loads_its_own_spelling_and_rejects_pros() -> None:
    domain = Domain.load(str(OSS_DOMAIN))
    vip = next(slot for slot in domain.slots if slot.name == "sparkcentral_vip")
    assert vip.mappings == [{"type": "custom", "action": "action_sparkcentral_channel_details"}]
    with pytest.raises(InvalidDomain, match="controlled"):
        Domain.load(str(PRO_DOMAIN))
