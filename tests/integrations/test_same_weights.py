"""``adasparse train``, a plain loop with the Pruner and the Lightning callback are one method: on the same seed,
data order, optimizer and learning-rate schedule they end with bit-for-bit the same pruned weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adasparse import Pruner
from adasparse.app.data import load_dataset
from adasparse.app.data.loader import BatchLoader
from adasparse.app.models import create_model
from adasparse.app.train import TrainConfig, run_training

pl = pytest.importorskip("lightning.pytorch")
pytest.importorskip("sklearn")

from adasparse.integrations.lightning import SparsityCallback, param_groups  # noqa: E402

EPOCHS, LR, BATCH, SEED, TARGET = 4, 0.05, 64, 0, 0.9


def _cosine_restarts(epoch: int) -> float:
    """The CLI's schedule (``train.WarmRestartCosine(epochs // 2)``, stepped once per epoch), written out."""
    period = max(1, EPOCHS // 2)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch % period) / period))


def _loader() -> BatchLoader:
    """The CLI's training batches: the same split, the same generator seed, hence the same order every epoch."""
    data = load_dataset("digits", seed=SEED)
    generator = torch.Generator().manual_seed(SEED)
    return BatchLoader(
        data.x_train, data.y_train, BATCH, shuffle=True, generator=generator, transform=data.train_transform
    )


def _model() -> nn.Module:
    torch.manual_seed(SEED)  # as the CLI seeds before building the model
    return create_model("mlp", num_classes=10, input_shape=(1, 8, 8))


def _cli(tmp_path: Path) -> dict[str, torch.Tensor]:
    config = TrainConfig(
        dataset="digits", model="mlp", target=TARGET, epochs=EPOCHS, lr=LR, batch_size=BATCH, seed=SEED, device="cpu"
    )
    run_training(config, tmp_path / "run", progress=False, log=lambda line: None)
    return torch.load(tmp_path / "run" / "model_sparse.pt", weights_only=True)


def _plain_loop() -> dict[str, torch.Tensor]:
    loader = _loader()
    model = _model()
    pruner = Pruner(model, target=TARGET, total_steps=len(loader) * EPOCHS)  # every other setting: the defaults
    optimizer = torch.optim.SGD(pruner.param_groups(lr=LR, weight_decay=5e-4), lr=LR, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_restarts)
    for _ in range(EPOCHS):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y) + pruner.loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            pruner.step()
        schedule.step()
    return pruner.finish().state_dict()


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _model()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> dict[str, object]:
        optimizer = torch.optim.SGD(param_groups(self, lr=LR, weight_decay=5e-4), lr=LR, momentum=0.9)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_restarts)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


def _lightning(tmp_path: Path) -> dict[str, torch.Tensor]:
    module = Module()
    callback = SparsityCallback(target=TARGET)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=EPOCHS,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _loader())
    assert callback.result is not None and callback.result.reached
    return module.net.state_dict()


def test_cli_plain_loop_and_lightning_end_with_the_same_weights(tmp_path: Path) -> None:
    cli = _cli(tmp_path)
    plain = _plain_loop()
    lightning = _lightning(tmp_path)
    assert cli.keys() == plain.keys() == lightning.keys()
    # Exact equality: the same operations in the same order (Lightning at 32-bit precision does not scale the loss,
    # and its SGD step with a closure is the same update), so any difference is a difference of method.
    assert [key for key in cli if not torch.equal(cli[key], plain[key])] == []
    assert [key for key in cli if not torch.equal(cli[key], lightning[key])] == []
    zeros = sum(int((cli[key] == 0).sum()) for key in cli if key.endswith("weight"))
    assert zeros > 0.85 * sum(cli[key].numel() for key in cli if key.endswith("weight"))
