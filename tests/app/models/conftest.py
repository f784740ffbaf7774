"""Fixtures for the model tests: every one runs on one thread (see ``one_thread`` in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every model test on one thread."""
