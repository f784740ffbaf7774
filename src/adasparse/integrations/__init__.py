"""Integrations with training frameworks (optional extras): :mod:`.lightning` and :mod:`.hf`."""
