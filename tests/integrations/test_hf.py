"""The Hugging Face Trainer subclass: a tiny real run on digits ends desparsified at the exact target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse
from adasparse.data import load_dataset
from adasparse.models import create_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("sklearn")

from adasparse.integrations.hf import SparsityTrainer  # noqa: E402


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = create_model("mlp", num_classes=10, input_shape=(1, 8, 8))

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(pixels)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels)
        return output


def _arguments(tmp_path: Path, **options: Any) -> transformers.TrainingArguments:
    """A short CPU run on batches of 64 at lr 0.05, nothing saved or reported."""
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=64,
        learning_rate=0.05,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **options,
    )


def test_trainer_prunes_to_the_exact_target(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits", seed=0)
    train = [{"pixels": x, "labels": y} for x, y in zip(data.x_train, data.y_train)]
    args = _arguments(
        tmp_path, num_train_epochs=3, weight_decay=5e-4, optim="sgd", optim_args="momentum=0.9", logging_steps=10
    )
    model = Classifier()
    trainer = SparsityTrainer(
        model=model, args=args, train_dataset=train, sparsity_target=0.8, threshold_lr_scale=0.2
    )  # a short run: the thresholds need a faster rate than the recipe's lr/100
    groups = trainer.create_optimizer().param_groups
    assert groups[-1]["lr"] == pytest.approx(0.05 * 0.2) and groups[-1]["weight_decay"] == 0.0
    trainer.train()
    assert not adasparse.pruned_tensors(model)
    report = adasparse.sparsity_report(model)
    assert abs(report.pruned_zeros - 0.8 * report.pruned_params) <= 1
    assert any("sparsity" in entry for entry in trainer.state.log_history)
    with torch.no_grad():
        accuracy = (model(data.x_test)["logits"].argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.8


def test_trainer_tracks_the_target_without_calibration(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits", seed=0)
    train = [{"pixels": x, "labels": y} for x, y in zip(data.x_train, data.y_train)]
    args = _arguments(tmp_path, num_train_epochs=2)
    model = Classifier()
    trainer = SparsityTrainer(
        model=model,
        args=args,
        train_dataset=train,
        sparsity_target=0.8,
        sparsity_ramp=0.5,
        calibrate_at_end=False,
        desparsify_at_end=False,
    )
    trainer.train()
    assert trainer.sparsity_loss.target == pytest.approx(0.8)
    assert adasparse.sparsity_report(model).overall == pytest.approx(0.8, abs=0.005)  # projected at every step
    with pytest.raises(ValueError, match=r"sparsity_ramp must be a fraction of training in \[0, 1\]"):
        SparsityTrainer(model=Classifier(), args=args, train_dataset=train, sparsity_target=0.8, sparsity_ramp=-1)
