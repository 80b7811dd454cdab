"""``rasa-sparkcentral init``: add the channel, its actions and their training data to an
existing Rasa project.

Only appends: never rewrites or reorders what is there (see ``yaml_text``), and adds only
what is missing, so a second run changes nothing. Returns one line per change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from rasa_sparkcentral import project_snippets as snip
from rasa_sparkcentral.project_files import (
    Project,
    ProjectError,
    data_facts,
    domain_facts,
    find_project,
    read_yaml,
)
from rasa_sparkcentral.protocol import CREDENTIALS_KEY
from rasa_sparkcentral.rasa_edition import RasaEdition
from rasa_sparkcentral.yaml_text import add_items, append_lines, has_key

DOMAIN_FILE_IN_FOLDER = "sparkcentral.yml"
DATA_FILE = "sparkcentral.yml"
VERSION_LINE = 'version: "3.1"'


@dataclass
class Edits:
    """New contents per file, and what changed, in the order it was planned."""

    root: Path
    texts: Dict[Path, str] = field(default_factory=dict)
    changes: List[str] = field(default_factory=list)

    def text(self, path: Path, new_file_header: Optional[str] = None) -> str:
        if path not in self.texts:
            if path.exists():
                self.texts[path] = _read(path)
            else:
                self.texts[path] = f"{new_file_header}\n" if new_file_header else ""
        return self.texts[path]

    def update(self, path: Path, text: str, change: str) -> None:
        self.texts[path] = text
        self.changes.append(f"{path.relative_to(self.root)}: {change}")

    def write(self) -> None:
        for path, text in self.texts.items():
            if path.exists() and _read(path) == text:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))


def _read(path: Path) -> str:
    """The file's text with its own line endings (no newline translation)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ProjectError(f"{path} is not UTF-8 text; left as it is") from None


def init_project(root: Path, edition: RasaEdition, *, dry_run: bool = False) -> List[str]:
    """Add what is missing to the project in ``root``; return the changes made."""
    project = find_project(root)
    edits = Edits(project.root)
    _credentials(project, edits)
    _endpoints(project, edits)
    _actions_import(project, edits)
    _domain(project, edition, edits)
    _data(project, edits)
    if not dry_run:
        edits.write()
    return edits.changes


def _credentials(project: Project, edits: Edits) -> None:
    path = project.credentials_path
    text = edits.text(path)
    if not has_key(text, CREDENTIALS_KEY):
        edits.update(
            path,
            append_lines(text, snip.CREDENTIALS_LINES),
            f"added {CREDENTIALS_KEY} (values from ${snip.ENV_CLIENT_ID}, "
            f"${snip.ENV_CLIENT_SECRET}, ${snip.ENV_SHARED_SECRET})",
        )


def _endpoints(project: Project, edits: Edits) -> None:
    path = project.endpoints_path
    text = edits.text(path)
    current = read_yaml(path) if path.exists() else None
    endpoint = current.get("action_endpoint") if isinstance(current, dict) else None
    if not has_key(text, "action_endpoint"):
        edits.update(
            path,
            append_lines(text, snip.ENDPOINTS_LINES),
            f"added action_endpoint {snip.DEFAULT_ACTION_URL}",
        )
    elif not endpoint:
        edits.changes.append(
            f"{path.name}: action_endpoint is empty: give it a url (left as it is)"
        )


def _actions_import(project: Project, edits: Edits) -> None:
    if project.imports_our_actions():
        return
    if project.actions_files and not project.actions_dir.is_dir():
        target = project.actions_files[0]  # a single actions.py module
    else:
        package = project.actions_dir
        target = package / "actions.py"
        if not target.exists():
            target = package / "__init__.py"
        if not (package / "__init__.py").exists() and target.name != "__init__.py":
            edits.update(package / "__init__.py", "", "created (the actions package)")
    edits.update(
        target,
        append_lines(edits.text(target), snip.ACTIONS_IMPORT_LINES),
        "added the import that registers Sparkcentral's actions",
    )


def _domain(project: Project, edition: RasaEdition, edits: Edits) -> None:
    facts = domain_facts(project)
    if project.domain_is_dir:
        path = project.domain_path / DOMAIN_FILE_IN_FOLDER
        header: Optional[str] = VERSION_LINE
    else:
        path = project.domain_path
        header = None
    where = str(path.relative_to(project.root))

    def slot(name: str, indent: str) -> List[str]:
        return snip.slot_lines(name, edition, indent)

    sections: List[Tuple[str, List[str], Callable[[str, str], List[str]], bool]] = [
        (
            "intents",
            [i for i in snip.INTENTS if i not in facts.intents],
            snip.scalar_item_lines,
            False,
        ),
        ("slots", [s for s in snip.slot_names() if s not in facts.slots], slot, False),
        (
            "actions",
            [a for a in snip.ACTIONS if a not in facts.actions],
            snip.scalar_item_lines,
            False,
        ),
        (
            "responses",
            [r for r in snip.RESPONSES if r not in facts.responses],
            snip.response_lines,
            True,
        ),
    ]
    for key, names, render, blank in sections:
        if not names:
            continue
        renderers = [partial(render, name) for name in names]
        text = edits.text(path, header)
        edits.update(
            path,
            add_items(text, key, renderers, blank_line_between=blank, where=where),
            f"added {key} {', '.join(names)}",
        )


def _data(project: Project, edits: Edits) -> None:
    facts = data_facts(project)
    fallback = project.root / "data" / DATA_FILE
    missing_nlu = [i for i in snip.INTENTS if i not in facts.nlu_intents]
    if missing_nlu:
        path = facts.nlu_file or fallback
        text = edits.text(path, VERSION_LINE)
        renderers = [partial(snip.nlu_lines, i) for i in missing_nlu]
        edits.update(
            path,
            add_items(text, "nlu", renderers, blank_line_between=True, where=path.name),
            f"added examples of intents {', '.join(missing_nlu)}",
        )
    missing_rules = [r for r in snip.RULES if r.action not in facts.rule_actions]
    if missing_rules:
        path = facts.rules_file or fallback
        text = edits.text(path, VERSION_LINE)
        renderers = [partial(snip.rule_lines, r) for r in missing_rules]
        edits.update(
            path,
            add_items(text, "rules", renderers, blank_line_between=True, where=path.name),
            "added rules: " + "; ".join(r.name for r in missing_rules),
        )
