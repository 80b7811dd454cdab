"""The example bot's files as Rasa Pro reads them, through its own loaders and validators
(no training, no engine): the Pro domain, the CALM handoff pattern override printed in the
README, and the components its pipeline names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from conftest import BOT_DIR, REPO_ROOT
from rasa.shared.core.domain import Domain
from rasa.shared.importers.importer import TrainingDataImporter
from rasa.validator import Validator

PRO_DOMAIN = BOT_DIR / "pro" / "domain.yml"
PRO_FLOWS = BOT_DIR / "pro" / "flows.yml"
DETAILS_ACTION = "action_sparkcentral_channel_details"
HANDOFF_ACTION = "action_handoff_to_sparkcentral"


def readme_flows_snippet() -> str:
    """The flows.yml block of the README's "Rasa Pro" section, exactly as printed."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Rasa Pro\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    flows = [b for b in blocks if b.startswith("flows:")]
    assert len(flows) == 1, "the Rasa Pro section prints one flows.yml block"
    return flows[0]


def load_domain(path: Path) -> tuple[Domain, List[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        domain = Domain.load(str(path))
    return domain, list(records)


def mapping_deprecations(records: List[warnings.WarningMessage]) -> List[str]:
    return [str(w.message) for w in records if "slot mappings is deprecated" in str(w.message)]


def oss_slot_mappings() -> Dict[str, List[Dict[str, Any]]]:
    """The sparkcentral_* slots of the OSS domain and their mappings, as written."""
    with open(BOT_DIR / "domain.yml", encoding="utf-8") as f:
        slots = yaml.safe_load(f)["slots"]
    return {
        name: list(slot.get("mappings") or [])
        for name, slot in slots.items()
        if name.startswith("sparkcentral_")
    }


def test_pro_domain_loads_with_controlled_mappings_and_no_deprecation() -> None:
    domain, records = load_domain(PRO_DOMAIN)
    assert mapping_deprecations(records) == []
    oss = oss_slot_mappings()
    slots = {slot.name: slot for slot in domain.slots if slot.name.startswith("sparkcentral_")}
    assert sorted(slots) == sorted(oss)
    for name, slot in slots.items():
        (mapping,) = slot.mappings
        assert mapping.type.value == "controlled", name
        # filled by the details action where the OSS spelling names it, else by actions
        expected = DETAILS_ACTION if any(m.get("action") for m in oss[name]) else None
        assert mapping.run_action_every_turn == expected, name
    assert HANDOFF_ACTION in domain.user_actions


def test_oss_domain_is_deprecated_on_pro() -> None:
    # why the Pro spelling exists: Rasa Pro warns on every `action:` slot mapping
    domain, records = load_domain(BOT_DIR / "domain.yml")
    with_action = [n for n, ms in oss_slot_mappings().items() if any(m.get("action") for m in ms)]
    # the details slots the example bot declares (those it reads, and the whole object)
    assert sorted(with_action) == sorted(
        f"sparkcentral_{name}"
        for name in (
            "channel_details",
            "primary_identifier",
            "vip",
            "contact_attributes",
            "language",
            "topics",
            "trigger",
        )
    )
    assert len(mapping_deprecations(records)) == len(with_action)
    vip = next(slot for slot in domain.slots if slot.name == "sparkcentral_vip")
    assert vip.mappings[0].run_action_every_turn == DETAILS_ACTION


def validator_for(flows_path: Path) -> tuple[TrainingDataImporter, Validator]:
    # A CALM bot that keeps NLU-mapped slots (the example's `plan`, from intents) runs
    # Rasa Pro's NLUCommandAdapter; Rasa OSS 3.6, which trains the example, has none.
    with open(BOT_DIR / "config.yml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["pipeline"].append({"name": "NLUCommandAdapter"})
    config_path = flows_path.parent / "config.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    importer = TrainingDataImporter.load_from_config(
        config_path=str(config_path),
        domain_path=str(PRO_DOMAIN),
        training_data_paths=[str(BOT_DIR / "data"), str(flows_path)],
    )
    return importer, Validator.from_importer(importer)


def assert_valid(validator: Validator) -> None:
    assert validator.verify_domain_validity()
    assert validator.verify_slot_mappings()
    assert validator.validate_CALM_slot_mappings()
    assert validator.verify_flows_steps_against_domain()
    assert validator.verify_unique_flows()
    assert validator.verify_flows()


def handoff_steps(importer: TrainingDataImporter) -> List[Any]:
    flow = importer.get_flows().flow_by_id("pattern_human_handoff")
    assert flow is not None
    return [getattr(step, "action", None) for step in flow.steps]


def test_readme_handoff_pattern_is_the_shipped_flows_file() -> None:
    assert readme_flows_snippet() == PRO_FLOWS.read_text(encoding="utf-8")


def test_readme_handoff_pattern_overrides_rasa_pros_default(tmp_path: Path) -> None:
    flows = tmp_path / "flows.yml"
    flows.write_text(readme_flows_snippet(), encoding="utf-8")
    importer, validator = validator_for(flows)
    assert_valid(validator)
    # the override replaces Rasa Pro's own pattern (utter_human_handoff_not_available)
    assert handoff_steps(importer) == [HANDOFF_ACTION]


def test_validators_reject_a_pattern_with_an_unknown_action(tmp_path: Path) -> None:
    flows = tmp_path / "flows.yml"
    flows.write_text(
        readme_flows_snippet().replace(HANDOFF_ACTION, "action_not_in_the_domain"),
        encoding="utf-8",
    )
    _, validator = validator_for(flows)
    assert not validator.verify_flows_steps_against_domain()


# Rasa Pro's own registry resolves every component the example bot's config names.
PIPELINE_PROBE = r"""
import json, sys
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
import yaml
with open(sys.argv[1], encoding="utf-8") as f:
    config = yaml.safe_load(f)
names = [c["name"] for c in config["pipeline"] + config["policies"]]
resolved = {n: DefaultV1Recipe._from_registry(n).clazz.__name__ for n in names}
print(json.dumps({"resolved": resolved, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_example_pipeline_needs_skops_not_rasa_pro_nlu() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PIPELINE_PROBE, str(BOT_DIR / "config.yml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["resolved"]["LogisticRegressionClassifier"] == "LogisticRegressionClassifier"
    assert set(report["resolved"]) == {
        "WhitespaceTokenizer",
        "RegexFeaturizer",
        "CountVectorsFeaturizer",
        "LogisticRegressionClassifier",
        "FallbackClassifier",
        "MemoizationPolicy",
        "RulePolicy",
    }
    assert report["tensorflow"] is False


@pytest.mark.parametrize("module", ["skops", "tensorflow"])
def test_what_is_installed_for_the_pipeline(module: str) -> None:
    # skops is the one package of rasa-pro[nlu] that the example pipeline needs
    # (LogisticRegressionClassifier); TensorFlow is not needed and not installed
    result = subprocess.run(
        [sys.executable, "-c", f"import importlib.util as u; print(bool(u.find_spec({module!r})))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == ("True" if module == "skops" else "False")
