"""scikit-learn's bundled handwritten digits: 1797 real 8x8 images of 10 classes, shipped inside the wheel."""

from __future__ import annotations

import torch

from . import DataError, Dataset
from ._split import float_transform, standardise

__all__ = ["TEST_FRACTION", "load_digits"]

TEST_FRACTION = 0.2


def load_digits(seed: int = 0) -> Dataset:
    """The digits as ``(N, 1, 8, 8)`` float32 images, a random 80/20 train/test split drawn from ``seed``,
    standardised with training statistics.

    Raises:
        DataError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise DataError('the digits data set needs scikit-learn: pip install "adasparse[data]"') from error
    data = sklearn_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))
    n_test = round(TEST_FRACTION * len(x))
    test, train = order[:n_test], order[n_test:]
    x_train, x_test, stats = standardise(x[train], x[test])
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=y[train],
        x_test=x_test,
        y_test=y[test],
        num_classes=10,
        input_shape=(1, 8, 8),
        train_transform=float_transform,
        test_transform=float_transform,
        info={"source": "sklearn.datasets.load_digits", "seed": int(seed), "standardise": stats},
    )
