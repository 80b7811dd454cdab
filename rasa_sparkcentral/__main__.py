"""``python -m rasa_sparkcentral`` is ``rasa-sparkcentral``."""

from rasa_sparkcentral.cli import main

raise SystemExit(main())
