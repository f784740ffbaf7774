"""MNIST-1D (Greydanus 2020): 1-D digit sequences of length 40 generated locally by the ``mnist1d`` package.

4000 training and 1000 test sequences, 10 classes; published test accuracies: logistic regression 32%, MLP 68%,
CNN 94%. Nothing is downloaded: the generator is deterministic given the seed.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch

from . import DataError, Dataset
from ._split import float_transform, standardise

__all__ = ["load_mnist1d"]


@functools.lru_cache(maxsize=4)
def _generated(seed: int) -> dict[str, np.ndarray]:
    """The generator's arrays for ``seed``, read-only, made once per process (2-3 s each; ``adasparse train`` loads
    the data for its dense reference and for the pruned run)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise DataError(
            'MNIST-1D needs the mnist1d package: pip install "adasparse[data]" (or pip install mnist1d)'
        ) from error
    args = get_dataset_args()
    args.seed = seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)  # seeds Python's and NumPy's global generators: restored below
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    arrays = {key: np.array(data[key]) for key in ("x", "y", "x_test", "y_test")}
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def load_mnist1d(seed: int = 0) -> Dataset:
    """Generate MNIST-1D with ``seed`` (data and split), standardised with training statistics.

    Inputs have shape ``(N, 1, 40)`` (one channel) as float32. Every call returns tensors of its own (the
    generated arrays are kept for the process, so a second load of the same seed costs only the copies).

    Raises:
        DataError: the optional ``mnist1d`` package is not installed.
    """
    data = _generated(int(seed))
    x_train = torch.tensor(data["x"], dtype=torch.float32).unsqueeze(1)
    x_test = torch.tensor(data["x_test"], dtype=torch.float32).unsqueeze(1)
    x_train, x_test, stats = standardise(x_train, x_test)
    return Dataset(
        name="mnist1d",
        x_train=x_train,
        y_train=torch.tensor(data["y"], dtype=torch.int64),
        x_test=x_test,
        y_test=torch.tensor(data["y_test"], dtype=torch.int64),
        num_classes=10,
        input_shape=(1, 40),
        train_transform=float_transform,
        test_transform=float_transform,
        info={"source": "mnist1d.make_dataset (generated locally)", "seed": int(seed), "standardise": stats},
    )
