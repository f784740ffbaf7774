"""The Lightning callback: a tiny real fit on digits ends desparsified at the exact target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import adasparse
from adasparse.data import load_dataset
from adasparse.models import create_model

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("sklearn")

from adasparse.integrations.lightning import SparsityCallback  # noqa: E402


class DigitsModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = create_model("mlp", num_classes=10, input_shape=(1, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(adasparse.param_groups(self, lr=0.05, weight_decay=5e-4), lr=0.05, momentum=0.9)


def _loader() -> torch.utils.data.DataLoader:
    data = load_dataset("digits", seed=0)
    dataset = torch.utils.data.TensorDataset(data.x_train, data.y_train)
    return torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))


def _trainer(tmp_path: Path, **options: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **options,
    )


def test_fit_prunes_to_the_exact_target(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = DigitsModule()
    callback = SparsityCallback(target=0.8)
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[callback])
    trainer.fit(module, _loader())
    assert not adasparse.pruned_tensors(module)  # desparsified at the end
    report = adasparse.sparsity_report(module)
    assert abs(report.pruned_zeros - 0.8 * report.pruned_params) <= 1
    assert "sparsity/actual" in trainer.callback_metrics and "sparsity/loss" in trainer.callback_metrics
    data = load_dataset("digits", seed=0)
    with torch.no_grad():
        accuracy = (module(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.8
    assert callback.state_dict()["mode"] == "projection"


def test_warns_when_thresholds_are_not_optimized(tmp_path: Path) -> None:
    class Plain(DigitsModule):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD([p for n, p in self.named_parameters() if not n.endswith("_threshold")], lr=0.05)

    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[SparsityCallback(target=0.8)])
    with pytest.warns(UserWarning, match="pruning thresholds are in no optimizer group"):
        trainer.fit(Plain(), _loader())


def test_projection_tracks_the_target_without_calibration(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = DigitsModule()
    callback = SparsityCallback(target=0.8, ramp=0.5, calibrate_at_end=False, desparsify_at_end=False)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[callback])
    trainer.fit(module, _loader())
    assert callback.criterion is not None and callback.criterion.target == pytest.approx(0.8)  # the ramp ended
    assert adasparse.sparsity_report(module).overall == pytest.approx(0.8, abs=0.005)  # no calibration needed
    with pytest.raises(ValueError, match=r"ramp must be a fraction of training in \[0, 1\], got 1.5"):
        SparsityCallback(target=0.8, ramp=1.5)
