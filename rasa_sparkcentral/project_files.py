"""Where a Rasa project keeps its files, and reading them the way Rasa does.

Read-only: ``project_init`` writes, ``doctor`` checks; both find files here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

YAML_SUFFIXES = (".yml", ".yaml")
_ENV_VAR = re.compile(r"^(.*)\$\{(.*)\}(.*)$")
_IMPORTS_OUR_ACTIONS = re.compile(
    r"^\s*(from\s+rasa_sparkcentral\.actions\s+import|import\s+rasa_sparkcentral\.actions)",
    re.MULTILINE,
)


class ProjectError(ValueError):
    """A file cannot be read; the message names it and says why."""


class UnsetVariableError(ProjectError):
    """A ``${VAR}`` in a file names an unset environment variable."""

    def __init__(self, path: Path, names: List[str]) -> None:
        self.names = names
        super().__init__(f"{path.name} uses unset environment variable(s) {', '.join(names)}")


class _PlainConstructor(SafeConstructor):
    """Safe loading that reads ``${VAR}`` as text, also in a process that imported Rasa:
    Rasa registers an ``!env_var`` tag on ruamel's shared classes, which would expand
    (or refuse) every variable on load. Expansion is ours to do, below."""


_PlainConstructor.add_constructor("!env_var", SafeConstructor.construct_yaml_str)


def load_yaml_text(text: str) -> Any:
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _PlainConstructor
    return yaml.load(text)


def read_yaml(path: Path, *, expand_env: bool = False) -> Any:
    """The YAML document in ``path`` (None when empty). With ``expand_env``, every string
    holding ``${VAR}`` is expanded as Rasa does, and an unset variable is an error."""
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProjectError(f"{path}: cannot be read ({e})") from None
    except YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProjectError(f"{path.name} is not valid YAML: {first}") from None
    if expand_env:
        unset: List[str] = []
        data = _expand(data, unset)
        if unset:
            raise UnsetVariableError(path, sorted(set(unset)))
    return data


def _expand(value: Any, unset: List[str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, unset) for v in value]
    if isinstance(value, str) and _ENV_VAR.match(value):
        expanded = os.path.expandvars(value)
        unset.extend(
            re.sub(r"[${}]", "", word)
            for word in expanded.split()
            if word.startswith("$") and word in value
        )
        return expanded
    return value


def _yaml_files(path: Path) -> List[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    return []


@dataclass
class Project:
    """The files of one Rasa project (``rasa init`` layout, or a ``domain/`` folder)."""

    root: Path
    domain_path: Path
    data_files: List[Path]
    actions_files: List[Path]

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials.yml"

    @property
    def endpoints_path(self) -> Path:
        return self.root / "endpoints.yml"

    @property
    def domain_is_dir(self) -> bool:
        return self.domain_path.is_dir()

    @property
    def domain_files(self) -> List[Path]:
        return _yaml_files(self.domain_path)

    @property
    def actions_dir(self) -> Path:
        return self.root / "actions"

    def imports_our_actions(self) -> bool:
        return any(
            _IMPORTS_OUR_ACTIONS.search(p.read_text(encoding="utf-8", errors="replace"))
            for p in self.actions_files
        )


def find_project(root: Path) -> Project:
    root = root.resolve()
    if not root.is_dir():
        raise ProjectError(f"{root} is not a directory")
    domain_path = next(
        (root / name for name in ("domain.yml", "domain.yaml", "domain") if (root / name).exists()),
        None,
    )
    if domain_path is None:
        raise ProjectError(
            f"{root} has no domain.yml nor domain/ folder: is it a Rasa project "
            "(run `rasa init` first)?"
        )
    actions: List[Path] = []
    if (root / "actions").is_dir():
        actions = sorted((root / "actions").rglob("*.py"))
    elif (root / "actions.py").is_file():
        actions = [root / "actions.py"]
    return Project(root, domain_path, _yaml_files(root / "data"), actions)


@dataclass
class DomainFacts:
    """What a domain declares (merged over a ``domain/`` folder)."""

    intents: Set[str] = field(default_factory=set)
    actions: Set[str] = field(default_factory=set)
    responses: Set[str] = field(default_factory=set)
    slots: Dict[str, Any] = field(default_factory=dict)


def _names(items: Any) -> Set[str]:
    names: Set[str] = set()
    for item in items or []:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, dict):
            names.update(str(k) for k in item)
    return names


def domain_facts(project: Project) -> DomainFacts:
    facts = DomainFacts()
    for path in project.domain_files:
        data = read_yaml(path)
        if not isinstance(data, dict):
            continue
        facts.intents |= _names(data.get("intents"))
        facts.actions |= _names(data.get("actions"))
        facts.responses |= set(data.get("responses") or {})
        slots = data.get("slots") or {}
        if isinstance(slots, dict):
            facts.slots.update(slots)
    return facts


@dataclass
class DataFacts:
    """What the training data holds: intents with examples, actions in rules/stories."""

    nlu_intents: Set[str] = field(default_factory=set)
    rule_actions: Set[str] = field(default_factory=set)
    nlu_file: Optional[Path] = None
    rules_file: Optional[Path] = None


def data_facts(project: Project) -> DataFacts:
    facts = DataFacts()
    for path in project.data_files:
        data = read_yaml(path)
        if not isinstance(data, dict):
            continue
        if "nlu" in data:
            facts.nlu_file = _preferred(facts.nlu_file, path, "nlu.yml")
            for item in data.get("nlu") or []:
                if isinstance(item, dict) and item.get("intent") and item.get("examples"):
                    facts.nlu_intents.add(str(item["intent"]))
        if "rules" in data:
            facts.rules_file = _preferred(facts.rules_file, path, "rules.yml")
        for key in ("rules", "stories"):
            for item in data.get(key) or []:
                steps = item.get("steps") if isinstance(item, dict) else None
                for step in steps or []:
                    if isinstance(step, dict) and step.get("action"):
                        facts.rule_actions.add(str(step["action"]))
    return facts


def _preferred(current: Optional[Path], candidate: Path, name: str) -> Path:
    """The first file found, unless a later one has the conventional name."""
    if current is None or (candidate.name == name and current.name != name):
        return candidate
    return current
