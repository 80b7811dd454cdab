"""Custom actions of the example bot.

`rasa run actions --actions actions` imports this package: the first line registers the
Sparkcentral actions (channel details slots, handoff, resolve), the second the bot's own.
"""

from rasa_sparkcentral.actions import *  # noqa: F403

from . import actions  # noqa: F401
