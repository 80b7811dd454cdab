"""``python -m rasa_sparkcentral.testing.emulator serve|chat``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
