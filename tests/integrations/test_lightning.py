"""The Lightning callback: a thin adapter over the Pruner (its defaults, its fine-tuning phase, its checkpoints)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import adasparse
from adasparse import PrunerConfig
from adasparse.app.data import load_dataset
from adasparse.app.models import create_model

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("sklearn")

from adasparse.integrations.lightning import SparsityCallback, param_groups  # noqa: E402

from ..zoo import ATTENTION_HEADS, AttentionNet  # noqa: E402


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
        return torch.optim.SGD(param_groups(self, lr=0.05, weight_decay=5e-4), momentum=0.9)


def _loader(shuffle: bool = True) -> torch.utils.data.DataLoader:
    data = load_dataset("digits", seed=0)
    dataset = torch.utils.data.TensorDataset(data.x_train, data.y_train)
    generator = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=shuffle, generator=generator)


def _trainer(tmp_path: Path, **options: object) -> pl.Trainer:
    settings: dict[str, object] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    settings.update(options)
    return pl.Trainer(**settings)


def test_fit_prunes_to_the_exact_target_with_the_pruners_defaults(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = DigitsModule()
    callback = SparsityCallback(target=0.8)
    assert callback.config == PrunerConfig().validated()  # the CLI's defaults, from one place
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[callback])
    trainer.fit(module, _loader())
    pruner = callback.pruner
    assert pruner is not None and pruner.total_steps == trainer.estimated_stepping_batches == 3 * 23
    assert pruner.steps == trainer.global_step == 69
    assert pruner.freeze_result is not None and pruner.freeze_result.reached  # fixed-mask fine-tuning ran
    assert pruner.finished and callback.result is not None and callback.result.reached
    assert not adasparse.pruned_tensors(module)  # desparsified at the end
    assert "training_step" not in vars(module)  # the wrapper is removed at teardown
    report = adasparse.sparsity_report(module)
    assert abs(report.pruned_zeros - 0.8 * report.pruned_params) <= 1
    assert "sparsity/actual" in trainer.callback_metrics and "sparsity/loss" in trainer.callback_metrics
    data = load_dataset("digits", seed=0)
    with torch.no_grad():
        accuracy = (module(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.8
    assert callback.state_dict()["config"]["mode"] == "projection"


def test_options_are_pruner_config_fields_and_older_names_still_work() -> None:
    callback = SparsityCallback(0.9, "adaptive", 5.0, ramp=0.0, finetune=0.1, min_params=10, calibrate_at_end=False)
    assert callback.config == PrunerConfig(
        mode="adaptive", weight=5.0, ramp=0.0, finetune=0.1, min_params=10, calibrate=False
    )
    assert callback.criterion is None and callback.pruner is None  # built in setup
    with pytest.raises(TypeError, match="unknown pruning option"):
        SparsityCallback(target=0.8, threshold_lr_sclae=0.1)
    with pytest.raises(ValueError, match=r"ramp must be a fraction of the steps in \[0, 1\), got 1.5"):
        SparsityCallback(target=0.8, ramp=1.5)


def test_thresholds_in_the_optimizer_are_refused_when_the_pruner_moves_them(tmp_path: Path) -> None:
    class Recipe(DigitsModule):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(adasparse.param_groups(self, lr=0.05), momentum=0.9)  # thresholds included

    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[SparsityCallback(target=0.8)])
    with pytest.raises(ValueError, match="thresholds are in the optimizer, but the pruner moves them itself"):
        trainer.fit(Recipe(), _loader())

    class Plain(DigitsModule):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD([p for n, p in self.named_parameters() if not n.endswith("_threshold")], lr=0.05)

    callback = SparsityCallback(target=0.8, threshold_update="optimizer")
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[callback])
    with pytest.warns(UserWarning, match="pruning thresholds are in no optimizer group"):
        trainer.fit(Plain(), _loader())


def test_gradient_accumulation_advances_the_pruner_once_per_optimizer_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback = SparsityCallback(target=0.8)
    trainer = _trainer(tmp_path, max_epochs=2, accumulate_grad_batches=4, callbacks=[callback])
    trainer.fit(DigitsModule(), _loader())
    assert callback.pruner is not None
    assert callback.pruner.total_steps == trainer.global_step == callback.pruner.steps == 2 * 6  # 23 batches / 4
    assert callback.result is not None and callback.result.reached


def test_an_endless_fit_needs_total_steps(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, max_epochs=-1, max_steps=-1, callbacks=[SparsityCallback(target=0.8)])
    with pytest.raises(ValueError, match="the fit has no step limit"):
        trainer.fit(DigitsModule(), _loader())


def test_resumed_fit_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path: Path) -> None:
    class StopAfter(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    def fit(callbacks: list[pl.Callback], ckpt_path: str | None = None, **options: object) -> DigitsModule:
        torch.manual_seed(0)
        module = DigitsModule()
        _trainer(tmp_path, max_epochs=3, callbacks=callbacks, **options).fit(
            module, _loader(False), ckpt_path=ckpt_path
        )
        return module

    expected = fit([SparsityCallback(target=0.8, finetune=0.4)]).state_dict()
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = SparsityCallback(target=0.8, finetune=0.4, desparsify_at_end=False)
    fit([first, StopAfter(), checkpoints], enable_checkpointing=True)  # 46 of 69 steps, past the freeze at 41
    assert first.pruner is not None and first.pruner.frozen and not first.pruner.finished
    resumed_callback = SparsityCallback(target=0.8, finetune=0.4)
    resumed = fit([resumed_callback], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")).state_dict()
    assert resumed_callback.pruner is not None and resumed_callback.pruner.steps == 69
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


class AttentionModule(DigitsModule):
    """The same module around a network of declared attention heads, trained with AdamW."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AttentionNet()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(param_groups(self, lr=1e-3))


def test_declared_heads_reach_the_pruner_and_shrink_away(tmp_path: Path) -> None:
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, 8, generator=generator)
    y = x[:, :, :3].sum(dim=1).argmax(dim=1)
    module = AttentionModule()
    callback = SparsityCallback(
        target=0.5, granularity="channel", budget="flops", min_params=100, example_input=x[:4], heads=ATTENTION_HEADS
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, max_epochs=8, callbacks=[callback]).fit(module, loader)
    assert callback.result is not None and callback.result.reached
    smaller = adasparse.shrink(module.net, x[:4], heads=ATTENTION_HEADS)
    assert sum(block.attn.num_heads for block in smaller.blocks) < 8
    module.eval()
    with torch.no_grad():
        assert torch.allclose(smaller(x), module.net(x), atol=1e-5)
