#!/usr/bin/env python3
"""Write the Rasa Pro spelling of a Rasa Open Source 3.x domain.

Rasa Open Source 3.6 fills a slot from a custom action with

    mappings:
      - type: custom
        action: action_sparkcentral_channel_details

Rasa Pro >= 3.12 deprecates that (removed in Pro 4.0) in favour of

    mappings:
      - type: controlled
        run_action_every_turn: action_sparkcentral_channel_details

and Rasa Open Source 3.6 rejects ``controlled``. This rewrites only those mapping lines
(comments and everything else stay as they are), so one domain is maintained:

    scripts/pro-domain.py                     example_bot/domain.yml -> example_bot/pro/domain.yml
    scripts/pro-domain.py IN.yml OUT.yml      any domain
    scripts/pro-domain.py --check             exit 1 when the example bot's Pro domain is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
OSS_DOMAIN = REPO_ROOT / "example_bot" / "domain.yml"
PRO_DOMAIN = REPO_ROOT / "example_bot" / "pro" / "domain.yml"

HEADER = (
    "# GENERATED from {source} by scripts/pro-domain.py: the Rasa Pro spelling of its\n"
    "# slot mappings (type: controlled, run_action_every_turn:). Edit the source, then run\n"
    "# scripts/pro-domain.py again.\n"
)

_CUSTOM = re.compile(r"^(?P<indent>\s*)- type: custom\s*(?P<comment>#.*)?$")
_ACTION = re.compile(r"^(?P<indent>\s*)action: (?P<action>\S+)\s*(?P<comment>#.*)?$")
# the OSS domain's note about the Pro spelling: pointless in the Pro file
_PRO_NOTE = re.compile(r"^\s*# \(Rasa Pro .*\)\s*$")


def to_pro(text: str, source: str = "domain.yml") -> str:
    """The Rasa Pro spelling of a domain's text."""
    lines = text.splitlines()
    out: List[str] = [HEADER.format(source=source).rstrip("\n")]
    i = 0
    while i < len(lines):
        line = lines[i]
        custom = _CUSTOM.match(line)
        if custom is None:
            if not _PRO_NOTE.match(line):
                out.append(line)
            i += 1
            continue
        indent = custom.group("indent")
        out.append(f"{indent}- type: controlled")
        following = lines[i + 1] if i + 1 < len(lines) else ""
        action = _ACTION.match(following)
        if action is not None and len(action.group("indent")) == len(indent) + 2:
            out.append(f"{action.group('indent')}run_action_every_turn: {action.group('action')}")
            i += 1
        i += 1
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=OSS_DOMAIN)
    parser.add_argument("target", nargs="?", type=Path, default=PRO_DOMAIN)
    parser.add_argument("--check", action="store_true", help="only check the target is current")
    args = parser.parse_args(argv)
    source: Path = args.source
    target: Path = args.target
    try:
        name = str(source.resolve().relative_to(REPO_ROOT))
    except ValueError:
        name = source.name
    wanted = to_pro(source.read_text(encoding="utf-8"), name)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != wanted:
            print(f"{target} is out of date: run scripts/pro-domain.py", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
