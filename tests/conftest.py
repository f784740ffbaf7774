"""Shared fixtures."""

from __future__ import annotations

import random

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
