"""End to end on real data (scikit-learn's bundled digits): each loss drives the model to the target sparsity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse

datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn provides the offline digits data")

TARGET = 0.9


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def _train(digits, mode: str | None, epochs: int = 30) -> tuple[nn.Module, float]:
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    criterion = None
    if mode is not None:
        adasparse.sparsify(model, target=TARGET)
        criterion = adasparse.SparsityLoss(model, target=TARGET, mode=mode, weight=10.0)
    optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.1, weight_decay=5e-4), momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            if criterion is not None:
                loss = loss + criterion()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return model, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["adaptive", "fixed", "upper"])
def test_loss_drives_actual_sparsity_to_target(digits, mode: str) -> None:
    model, accuracy = _train(digits, mode)
    report = adasparse.sparsity_report(model)
    low = TARGET - 0.02
    high = TARGET + 0.02 if mode != "upper" else 0.99  # the budget form only bounds from below
    assert low <= report.overall <= high, str(report)
    assert accuracy > 0.9, accuracy  # chance is 0.1; dense reaches about 0.97

    result = adasparse.calibrate(model, TARGET)
    assert result.reached
    assert abs(result.after.pruned_zeros - TARGET * result.after.pruned_params) <= 1
    x_test, y_test = digits[2], digits[3]
    adasparse.desparsify(model)
    with torch.no_grad():
        calibrated_accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert calibrated_accuracy > 0.85
    assert adasparse.sparsity_report(model).pruned_zeros == result.after.pruned_zeros


@pytest.mark.slow
def test_sparse_model_stays_near_dense_accuracy(digits) -> None:
    _, dense = _train(digits, None)
    _, sparse = _train(digits, "adaptive")
    assert dense > 0.93
    assert sparse > dense - 0.03
