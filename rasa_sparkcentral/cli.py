"""``rasa-sparkcentral``: ``init`` adds the channel to a Rasa project, ``doctor`` checks one.

Argument parsing only; the work is in ``project_init`` and ``doctor``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_RASA_URL = "http://localhost:5005"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rasa-sparkcentral",
        description="Add the Sparkcentral channel to a Rasa project, and check the setup.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser(
        "init",
        help="add the channel, its actions, domain entries, intents and rules",
        description="Add what the Sparkcentral channel needs to an existing Rasa project. "
        "Only appends; a second run changes nothing.",
    )
    init.add_argument("project_dir", nargs="?", default=".", type=Path)
    init.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    doctor = commands.add_parser(
        "doctor",
        help="find what is wrong with the setup, one line with the fix each",
        description="Check the project's files and the running servers. Exit code 0 only "
        "when everything is well.",
    )
    doctor.add_argument("project_dir", nargs="?", default=".", type=Path)
    doctor.add_argument(
        "--rasa-url", default=DEFAULT_RASA_URL, help=f"rasa run's URL (default {DEFAULT_RASA_URL})"
    )
    doctor.add_argument(
        "--online",
        action="store_true",
        help="also ask Sparkcentral for a token with the API keys (one request)",
    )
    return parser


def _init(args: argparse.Namespace) -> int:
    from rasa_sparkcentral.project_files import ProjectError
    from rasa_sparkcentral.project_init import init_project
    from rasa_sparkcentral.rasa_edition import installed_rasa
    from rasa_sparkcentral.yaml_text import YamlEditError

    edition = installed_rasa()
    if edition is None:
        print(
            "rasa-sparkcentral init: Rasa is not installed here: "
            "pip install 'rasa-sparkcentral[rasa]'"
        )
        return 2
    try:
        changes = init_project(args.project_dir, edition, dry_run=args.dry_run)
    except (ProjectError, YamlEditError) as e:
        print(f"rasa-sparkcentral init: {e}")
        return 2
    root = args.project_dir.resolve()
    if not changes:
        print(f"Nothing to change: {root} has everything rasa-sparkcentral needs ({edition}).")
        return 0
    verb = "Would change" if args.dry_run else "Changed"
    print(f"{verb} {root} for {edition}:")
    for change in changes:
        print(f"  {change}")
    if not args.dry_run:
        print(
            "Next: export the SPARKCENTRAL_* variables, `rasa train`, start the action "
            "server and `rasa run`, then `rasa-sparkcentral doctor`."
        )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from rasa_sparkcentral.doctor import run_doctor

    return run_doctor(args.project_dir, rasa_url=args.rasa_url, online=args.online)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    handlers = {"init": _init, "doctor": _doctor}
    code: int = handlers[args.command](args)
    sys.stdout.flush()
    return code
