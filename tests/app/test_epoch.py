"""One epoch's pieces (app/epoch.py): the evaluation, the divergence check and the log line."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adasparse.app.config import TrainConfig
from adasparse.app.data.loader import BatchLoader
from adasparse.app.epoch import check_not_diverged, epoch_line, evaluate


def test_evaluate_is_the_mean_loss_and_accuracy_over_every_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    model.train()
    loss, accuracy = evaluate(model, BatchLoader(x, y, 3))
    assert not model.training  # put in eval mode: no dropout
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, y).item())
    assert accuracy == (logits.argmax(1) == y).float().mean().item()


def test_divergence_names_the_parameter_or_the_loss() -> None:
    model = nn.Linear(2, 2)
    config = TrainConfig(epochs=5, lr=0.5)
    check_not_diverged(model, 0, config, loss=1.0)
    with pytest.raises(ValueError, match=r"epoch 3 of 5: the training loss is inf; try a lower .* lr=0\.5"):
        check_not_diverged(model, 2, config, loss=math.inf)
    with torch.no_grad():
        model.bias[0] = math.nan
    cause = RuntimeError("step failed")
    with pytest.raises(ValueError, match="bias has non-finite values") as raised:
        check_not_diverged(model, 0, config, cause=cause)
    assert raised.value.__cause__ is cause


def test_epoch_line() -> None:
    row = {"epoch": 2, "train_loss": 0.5, "test_accuracy": 0.9, "epoch_seconds": 1.25}
    config = TrainConfig(epochs=10)
    dense = epoch_line({**row, "actual_sparsity": 0.0, "analytic_sparsity": math.nan}, config)
    assert dense == "epoch   2/10  loss 0.5000  test acc 0.9000  1.2s"
    ours = epoch_line({**row, "actual_sparsity": 0.9, "analytic_sparsity": 0.89}, config)
    assert ours.endswith("  sparsity 0.9000 (analytic 0.8900)  1.2s")
    baseline = epoch_line({**row, "actual_sparsity": 0.5, "analytic_sparsity": math.nan}, config)
    assert baseline.endswith("  sparsity 0.5000  1.2s")
