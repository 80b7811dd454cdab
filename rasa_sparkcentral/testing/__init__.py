"""Tools to test a bot that uses the Sparkcentral channel; the channel never imports them.

- ``rasa_sparkcentral.testing.emulator``: a local Sparkcentral (``SparkcentralEmulator``),
  its CLI (``sparkcentral-emulator``) and its pytest plugin (``sparkcentral_emulator``).
- ``rasa_sparkcentral.testing.processes``: real ``rasa run``, action server and
  ``redis-server`` as child processes.
- ``rasa_sparkcentral.testing.stack``: ``bot_stack(...)``, all of them wired together.

Importing this package does nothing: import the module you need.
"""
