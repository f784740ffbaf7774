"""MNIST-1D and digits: real offline data, deterministic from the seed, standardised on the training split."""

from __future__ import annotations

import builtins
import random

import numpy as np
import pytest
import torch

from adasparse.app.data import DataError, load_dataset

pytest.importorskip("sklearn")
pytest.importorskip("mnist1d")


def test_mnist1d_shapes_and_determinism() -> None:
    data = load_dataset("mnist1d", seed=0)
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.y_train.dtype == torch.int64 and set(data.y_train.tolist()) == set(range(10))
    assert data.num_classes == 10 and data.input_shape == (1, 40)
    assert abs(float(data.x_train.mean())) < 1e-5 and float(data.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    again = load_dataset("mnist1d", seed=0)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    other = load_dataset("mnist1d", seed=1)
    assert not torch.equal(other.x_train, data.x_train)


def test_mnist1d_leaves_global_generators_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    load_dataset("mnist1d", seed=5)
    assert (random.random(), np.random.rand()) == expected


def test_mnist1d_is_generated_once_per_seed_and_every_load_owns_its_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    from adasparse.app.data import mnist1d as loader

    calls: list[int] = []
    make_dataset = mnist1d.data.make_dataset

    def counting(args):  # type: ignore[no-untyped-def]
        calls.append(args.seed)
        return make_dataset(args)

    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    loader._generated.cache_clear()
    first = load_dataset("mnist1d", seed=3)
    second = load_dataset("mnist1d", seed=3)
    assert calls == [3]
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_train, second.y_train)
    first.x_train.zero_()
    first.y_test.zero_()
    third = load_dataset("mnist1d", seed=3)
    assert torch.equal(third.x_train, second.x_train) and not torch.equal(third.x_train, first.x_train)
    assert torch.equal(third.y_test, second.y_test) and calls == [3]
    load_dataset("mnist1d", seed=4)
    assert calls == [3, 4]


def test_digits_split_and_standardisation() -> None:
    data = load_dataset("digits", seed=0)
    assert data.x_train.shape == (1438, 1, 8, 8) and data.x_test.shape == (359, 1, 8, 8)
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.x_test.mean()) != pytest.approx(0.0, abs=1e-5)  # test statistics are not used
    train_rows = {tuple(row.flatten().tolist()) for row in data.x_train}
    assert sum(tuple(row.flatten().tolist()) in train_rows for row in data.x_test) < 5  # disjoint (up to duplicates)
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.y_train, data.y_train)
    assert not torch.equal(load_dataset("digits", seed=1).y_train, data.y_train)
    transformed = data.train_transform(data.x_train[:4], None)
    assert transformed.dtype == torch.float32 and torch.equal(transformed, data.x_train[:4])


def test_missing_optional_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_extras(name: str, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if level == 0 and name.startswith(("mnist1d", "sklearn")):
            raise ImportError(name)
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_extras)
    with pytest.raises(DataError, match=r'pip install "adasparse\[data\]"'):
        load_dataset("mnist1d")
    with pytest.raises(DataError, match="needs scikit-learn"):
        load_dataset("digits")


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'svhn'; choose one of mnist1d, digits, cifar10, cifar100"):
        load_dataset("svhn")
