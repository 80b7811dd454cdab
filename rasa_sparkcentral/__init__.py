"""Sparkcentral by Hootsuite Virtual Agent channel for Rasa.

``rasa_sparkcentral.SparkcentralInput`` is the key to put in ``credentials.yml``.
The channel classes are imported on first use, so that ``rasa_sparkcentral.actions``
and ``rasa_sparkcentral.testing.emulator`` work where only rasa_sdk (or only aiohttp) is
installed, such as a separate action server image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SparkcentralInput", "SparkcentralOutput", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from rasa_sparkcentral.channel import SparkcentralInput
    from rasa_sparkcentral.output import SparkcentralOutput


def __getattr__(name: str) -> Any:
    if name not in ("SparkcentralInput", "SparkcentralOutput"):
        raise AttributeError(f"module 'rasa_sparkcentral' has no attribute {name!r}")
    try:
        from rasa_sparkcentral import channel, output
    except ImportError as e:
        # Rasa turns an ImportError into "Failed to find input channel class";
        # say what is really missing instead.
        raise RuntimeError(
            f"rasa_sparkcentral.{name} could not be imported: {e}. The channel needs "
            "Rasa 3.x (pip install 'rasa-sparkcentral[rasa]')."
        ) from e
    return channel.SparkcentralInput if name == "SparkcentralInput" else output.SparkcentralOutput
