"""pytest fixtures (registered as the ``sparkcentral_emulator`` pytest11 plugin).

- ``sparkcentral_emulator``: a started ``SparkcentralEmulator`` on a free loopback port,
  stopped after the test (async, function scope; needs pytest-asyncio).
- ``sparkcentral_emulator_options``: keyword arguments for it; override this fixture in
  your ``conftest.py`` to set ``webhook_url``, ``shared_secret``, ``known_topics``...

The module stays importable without pytest-asyncio; the fixture then fails with a clear
message.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Dict

import pytest

from .server import SparkcentralEmulator

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the environment
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture
def sparkcentral_emulator_options() -> Dict[str, Any]:
    """Keyword arguments for the ``sparkcentral_emulator`` fixture (override to change)."""
    return {}


async def _emulator(options: Dict[str, Any]) -> AsyncIterator[SparkcentralEmulator]:
    emulator = SparkcentralEmulator(**options)
    await emulator.start(host="127.0.0.1", port=0)
    try:
        yield emulator
    finally:
        await emulator.stop()


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def sparkcentral_emulator(
        sparkcentral_emulator_options: Dict[str, Any],
    ) -> AsyncIterator[SparkcentralEmulator]:
        """A running Sparkcentral emulator; its REST base URL is ``.base_url``."""
        async for emulator in _emulator(sparkcentral_emulator_options):
            yield emulator

else:  # pragma: no cover - depends on the environment

    @pytest.fixture
    def sparkcentral_emulator(sparkcentral_emulator_options: Dict[str, Any]) -> Any:
        """Needs pytest-asyncio."""
        pytest.fail(
            "the sparkcentral_emulator fixture needs pytest-asyncio (pip install pytest-asyncio)"
        )
