"""Which Rasa is installed, read from the distribution metadata (Rasa itself is not imported).

Rasa OSS 3.x and Rasa Pro < 3.12 spell a slot filled by a custom action as
``type: custom`` + ``action:``; Rasa Pro >= 3.12 as ``type: controlled`` +
``run_action_every_turn:``.

Rasa Open Source also checks every answer of the action server with ``jsonschema.validate``,
which in jsonschema 4 first re-checks Rasa's schema against the 2020-12 meta-schema: about
20 ms of CPU per answer, and the channel-details slots ask for one with every message.
jsonschema 3.2.0 (Rasa 3.6 accepts ``>=3.2,<4.18``) does the same check in about 2 ms;
Rasa Pro (3.21 read) builds its validator once.
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


def installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def slow_action_answers(edition: Optional[RasaEdition], jsonschema: Optional[str]) -> bool:
    """True when each answer of the action server costs this Rasa a schema re-check
    (Rasa Open Source with jsonschema 4 or later)."""
    if edition is None or edition.pro or jsonschema is None:
        return False
    release = _release(jsonschema)
    return bool(release) and release[0] >= 4


def installed_rasa() -> Optional[RasaEdition]:
    """The installed Rasa distribution, or None when there is none."""
    for name in DISTRIBUTIONS:
        version = installed_version(name)
        if version is not None:
            return RasaEdition(name, version)
    return None
