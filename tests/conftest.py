"""Shared fixtures."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from .zoo import ZOO, ZooEntry


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(params=ZOO, ids=[entry.name for entry in ZOO])
def zoo(request: pytest.FixtureRequest) -> ZooEntry:
    return request.param


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one thread: tiny models gain nothing from threads, and OpenMP threads stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
