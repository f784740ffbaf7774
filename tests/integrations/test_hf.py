"""The Hugging Face Trainer subclass: a thin adapter over the Pruner (its defaults, fine-tuning, checkpoints)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse
from adasparse import PrunerConfig
from adasparse.app.data import load_dataset
from adasparse.app.models import create_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("sklearn")

from adasparse.integrations.hf import PRUNER_STATE_NAME, SparsityTrainer  # noqa: E402


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


def _data() -> list[dict[str, torch.Tensor]]:
    data = load_dataset("digits", seed=0)
    return [{"pixels": x, "labels": y} for x, y in zip(data.x_train, data.y_train)]


def _arguments(tmp_path: Path, **options: Any) -> transformers.TrainingArguments:
    """A short CPU run on batches of 64 at lr 0.05 with SGD, nothing reported."""
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 64,
        "learning_rate": 0.05,
        "optim": "sgd",
        "optim_args": "momentum=0.9",
        "lr_scheduler_type": "constant",
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(options)
    return transformers.TrainingArguments(**settings)


def _optimized(trainer: SparsityTrainer) -> set[int]:
    return {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


def test_trainer_prunes_to_the_exact_target_with_the_pruners_defaults(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier()
    args = _arguments(tmp_path, num_train_epochs=3, weight_decay=5e-4, logging_steps=10)
    trainer = SparsityTrainer(model=model, args=args, train_dataset=_data(), sparsity_target=0.8)
    pruner = trainer.pruner
    assert pruner.config == PrunerConfig().validated()  # the CLI's defaults, from one place
    assert trainer.sparsity_loss is pruner.criterion
    thresholds = list(adasparse.threshold_parameters(model))
    trainer.train()
    assert not {id(p) for p in thresholds} & _optimized(trainer)  # the pruner moves them, not the optimizer
    assert pruner.total_steps == trainer.state.max_steps == trainer.state.global_step == pruner.steps == 3 * 23
    assert pruner.freeze_result is not None and pruner.freeze_result.reached  # fixed-mask fine-tuning ran
    assert trainer.sparsity_result is not None and trainer.sparsity_result.reached
    assert not adasparse.pruned_tensors(model)
    report = adasparse.sparsity_report(model)
    assert abs(report.pruned_zeros - 0.8 * report.pruned_params) <= 1
    logged = [entry for entry in trainer.state.log_history if "sparsity" in entry]
    assert logged and "sparsity_analytic" in logged[0]
    data = load_dataset("digits", seed=0)
    with torch.no_grad():
        accuracy = (model(data.x_test)["logits"].argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.8


def test_older_argument_names_and_the_optimizer_threshold_update(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier()
    trainer = SparsityTrainer(
        model=model,
        args=_arguments(tmp_path, num_train_epochs=2),
        train_dataset=_data(),
        sparsity_target=0.8,
        sparsity_ramp=0.5,
        calibrate_at_end=False,
        desparsify_at_end=False,
        threshold_update="optimizer",
        threshold_lr_scale=0.2,
    )
    assert (
        trainer.pruner.config
        == PrunerConfig(ramp=0.5, calibrate=False, threshold_update="optimizer", threshold_lr_scale=0.2).validated()
    )
    groups = trainer.create_optimizer().param_groups
    assert groups[-1]["lr"] == pytest.approx(0.05 * 0.2) and groups[-1]["weight_decay"] == 0.0
    assert [id(p) for p in groups[-1]["params"]] == [id(p) for p in adasparse.threshold_parameters(model)]
    trainer.train()
    assert trainer.pruner.frozen and not trainer.pruner.finished
    assert adasparse.sparsity_report(model).overall == pytest.approx(0.8, abs=0.005)  # projected at every step
    with pytest.raises(ValueError, match="ramp must be >= 0, got -1"):
        SparsityTrainer(
            model=Classifier(), args=trainer.args, train_dataset=_data(), sparsity_target=0.8, sparsity_ramp=-1
        )


def test_gradient_accumulation_advances_the_pruner_once_per_optimizer_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = _arguments(tmp_path, num_train_epochs=2, gradient_accumulation_steps=4)
    trainer = SparsityTrainer(model=Classifier(), args=args, train_dataset=_data(), sparsity_target=0.8)
    trainer.train()
    assert trainer.pruner.total_steps == trainer.state.global_step == trainer.pruner.steps == 2 * 6
    assert trainer.sparsity_result is not None and trainer.sparsity_result.reached


def test_resumed_training_restores_the_pruner(tmp_path: Path) -> None:
    def run(**options: Any) -> tuple[SparsityTrainer, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = Classifier()
        args = _arguments(tmp_path, num_train_epochs=3, save_strategy="steps", save_steps=46)
        trainer = SparsityTrainer(model=model, args=args, train_dataset=_data(), sparsity_target=0.8)
        trainer.train(**options)
        return trainer, model.state_dict()

    full, expected = run()
    saved = torch.load(tmp_path / "checkpoint-46" / PRUNER_STATE_NAME, weights_only=True)
    assert saved["steps"] == 46 and saved["frozen"] is False
    resumed, weights = run(resume_from_checkpoint=str(tmp_path / "checkpoint-46"))
    assert resumed.pruner.steps == 69 and resumed.sparsity_result is not None and resumed.sparsity_result.reached
    assert all(torch.equal(expected[key], weights[key]) for key in expected)


def test_the_bert_declaration_prunes_a_roberta_by_heads_too() -> None:
    pytest.importorskip("torch_pruning")
    from transformers import RobertaConfig, RobertaModel
    from transformers.models.roberta.modeling_roberta import RobertaAttention

    from adasparse.integrations.hf import bert_heads

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=20,
    )  # fmt: skip
    model = RobertaModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(3, 40, (2, 6))
    heads = bert_heads(RobertaAttention)
    assert list(heads) == [RobertaAttention]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(model, init_threshold=1.0, min_params=100, granularity="channel", example_input=ids,
                           heads=heads)  # fmt: skip
    head_sets = [p.layout for p in adasparse.pruned_tensors(model) if p.layout.kind == "head"]
    assert len({id(s) for s in head_sets}) == 2
    with torch.no_grad():
        expected = model(input_ids=ids).last_hidden_state
    smaller = adasparse.shrink(model, ids, heads=heads)
    kept = [int(s.current_keep().sum()) for s in {id(s): s for s in head_sets}.values()]
    assert min(kept) < 4  # heads were pruned, and shrink removes them
    assert [layer.attention.self.num_attention_heads for layer in smaller.encoder.layer] == kept
    with torch.no_grad():
        assert torch.allclose(smaller(input_ids=ids).last_hidden_state, expected, atol=1e-5)
