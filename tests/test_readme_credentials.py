"""The credentials.yml snippets of README.md load as printed, with Rasa's own reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
from rasa.shared.utils.io import read_yaml

from rasa_sparkcentral.config import Settings
from rasa_sparkcentral.protocol import CREDENTIALS_KEY

README = Path(__file__).resolve().parent.parent / "README.md"
SECRET = "00112233445566778899aabbccddeeff"


def channel_snippets() -> List[str]:
    """Every ```yaml block of the README that configures the channel."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if b.startswith(CREDENTIALS_KEY + ":")]


def test_the_readme_has_snippets_for_both_platforms() -> None:
    snippets = channel_snippets()
    assert any("platform: hootsuite" in s for s in snippets)
    assert any("platform:" not in s for s in snippets)


@pytest.mark.parametrize("snippet", channel_snippets())
def test_each_credentials_snippet_gives_valid_settings(
    snippet: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in set(re.findall(r"\$\{(\w+)\}", snippet)):
        value = SECRET if name.endswith("SHARED_SECRET") else f"value-of-{name.lower()}"
        if name.endswith("BASE_URL"):
            value = "http://127.0.0.1:8900"
        monkeypatch.setenv(name, value)
    data: Dict[str, Any] = read_yaml(snippet)  # expands ${VAR} as rasa run does
    settings = Settings.from_credentials(data[CREDENTIALS_KEY])
    assert settings.shared_secret == bytes.fromhex(SECRET)
    if "platform: hootsuite" in snippet:
        assert settings.platform == "hootsuite"
        assert settings.organization_id == "value-of-hootsuite_organization_id"
        assert settings.base_url == "https://platform.hootsuite.com"
        assert settings.allow_successor_fields is True
    else:
        assert settings.platform == "sparkcentral"
