"""Which Rasa is installed, read from the distribution metadata (Rasa itself is not imported).

Rasa OSS 3.x and Rasa Pro < 3.12 spell a slot filled by a custom action as
``type: custom`` + ``action:``; Rasa Pro >= 3.12 as ``type: controlled`` +
``run_action_every_turn:``.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: Distribution names, most specific first.
DISTRIBUTIONS = ("rasa-pro", "rasa-plus", "rasa")
CONTROLLED_SINCE = (3, 12)


@dataclass(frozen=True)
class RasaEdition:
    distribution: str
    version: str

    @property
    def pro(self) -> bool:
        return self.distribution != "rasa"

    @property
    def controlled_slots(self) -> bool:
        """True when slot mappings are spelled ``type: controlled``."""
        return self.pro and _release(self.version) >= CONTROLLED_SINCE

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"

    def slot_mapping(self, action: Optional[str]) -> Dict[str, str]:
        """The one mapping of a slot set by ``action`` (None: set by other actions)."""
        if self.controlled_slots:
            mapping = {"type": "controlled"}
            if action:
                mapping["run_action_every_turn"] = action
            return mapping
        mapping = {"type": "custom"}
        if action:
            mapping["action"] = action
        return mapping


def _release(version: str) -> Tuple[int, ...]:
    numbers = []
    for part in version.split(".")[:3]:
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def installed_rasa() -> Optional[RasaEdition]:
    """The installed Rasa distribution, or None when there is none."""
    for name in DISTRIBUTIONS:
        try:
            return RasaEdition(name, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
