"""The Pruner: the default life cycle in a user's own loop."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse
from adasparse import Pruner, PrunerConfig
from adasparse.core.operator import MAX_THRESHOLD
from tests.loops import train_with_pruner


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=generator)
    return x, (x[:, :10].argmax(1) + (x[:, 10] > 0).long()) % 10


def _train(model: nn.Module, pruner: Pruner, optimizer: torch.optim.Optimizer, steps: range) -> None:
    x, y = _data()
    train_with_pruner(model, pruner, optimizer, x, y, steps, batch=32)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_plain_loop_ends_with_exactly_the_target(optimizer_name: str) -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=60, min_params=500)
    groups = pruner.param_groups(lr=0.05 if optimizer_name == "sgd" else 3e-3, weight_decay=1e-4)
    optimizer = torch.optim.SGD(groups, momentum=0.9) if optimizer_name == "sgd" else torch.optim.AdamW(groups)
    _train(model, pruner, optimizer, range(60))
    result_model = pruner.finish()
    assert result_model is model
    assert not adasparse.pruned_tensors(model)
    assert type(model[0]) is nn.Linear
    report = adasparse.sparsity_report(model, min_params=500)
    assert report.pruned_params == 64 * 20 + 64 * 64 + 10 * 64
    assert abs(report.pruned_zeros - 0.9 * report.pruned_params) <= 1
    assert pruner.result is not None and pruner.result.reached


def test_thresholds_start_at_the_ramps_first_target_so_step_zero_prunes_nothing() -> None:
    model = _model()
    Pruner(model, target=0.9, total_steps=100, min_params=500)
    assert adasparse.sparsity_report(model).overall < 0.001
    assert all(float(t.threshold) == 0.0 for t in adasparse.pruned_tensors(model))


def test_without_ramp_thresholds_start_at_the_papers_fraction() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=100, min_params=500, ramp=0.0)
    expected = adasparse.threshold_for_sparsity(0.6 * 0.9)
    assert all(abs(float(t.threshold) - expected) < 1e-6 for t in adasparse.pruned_tensors(model))
    assert pruner.current_target == 0.9


def test_freeze_keeps_parameters_and_state_dict_keys() -> None:
    model = _model()
    pruner = Pruner(model, target=0.8, total_steps=10, min_params=500, finetune=0.5, ramp=0.2)
    parameters = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    _train(model, pruner, optimizer, range(5))
    assert pruner.frozen and pruner.freeze_result is not None and pruner.freeze_result.reached
    assert [id(p) for p in model.parameters()] == parameters
    assert list(model.state_dict()) == keys
    zeros = [t.effective() == 0 for t in adasparse.pruned_tensors(model)]
    _train(model, pruner, optimizer, range(5, 10))
    assert all(torch.equal(t.effective() == 0, z) for t, z in zip(adasparse.pruned_tensors(model), zeros))


@pytest.mark.parametrize(("slope", "stop"), [("gaussian", 35), ("lamp", 20), ("lamp", 35)])
def test_resumed_loop_ends_bit_for_bit_like_an_uninterrupted_one(slope: str, stop: int) -> None:
    def build() -> tuple[nn.Module, Pruner, torch.optim.Optimizer]:
        model = _model()
        pruner = Pruner(
            model, target=0.9, total_steps=40, min_params=500, correction_interval=3, projection_slope=slope
        )
        return model, pruner, torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)

    model, pruner, optimizer = build()
    _train(model, pruner, optimizer, range(40))
    expected = pruner.finish().state_dict()

    model, pruner, optimizer = build()
    _train(model, pruner, optimizer, range(stop))  # 35: past the freeze at step 32; 20: between two measurements
    saved = copy.deepcopy(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict()}
    )
    model, pruner, optimizer = build()
    pruner.load_state_dict(saved["pruner"])  # any order: masks live in the model's own state
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    _train(model, pruner, optimizer, range(stop, 40))
    resumed = pruner.finish().state_dict()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_step_without_an_optimizer_step_does_not_advance() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=10, min_params=500)
    with pytest.warns(UserWarning, match="no pruned weight changed"):
        pruner.step()
    assert pruner.steps == 0
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    _train(model, pruner, optimizer, range(1))
    assert pruner.steps == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.step()  # a skipped step (GradScaler): silent after the first warning
    assert pruner.steps == 1


def test_gradient_accumulation_advances_once_per_optimizer_step() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=10, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for micro in range(8):
            F.cross_entropy(model(x[micro * 32 : micro * 32 + 32]), y[micro * 32 : micro * 32 + 32]).backward()
            if micro % 4 == 3:
                optimizer.step()
                pruner.step()
                optimizer.zero_grad()
            else:
                pruner.step()
    assert pruner.steps == 2


def test_more_steps_than_planned_warn_once_and_keep_the_final_target() -> None:
    model = _model()
    pruner = Pruner(model, target=0.5, total_steps=4, min_params=500, finetune=0.0)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    with pytest.warns(UserWarning, match="more than total_steps=4"):
        _train(model, pruner, optimizer, range(6))
    assert pruner.current_target == 0.5
    assert abs(adasparse.sparsity_report(model).overall - 0.5) < 0.01


def test_bad_use_gets_clear_errors() -> None:
    with pytest.raises(ValueError, match="target must be in"):
        Pruner(_model(), target=1.5, total_steps=10)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        Pruner(_model(), target=0.5, total_steps=0)
    with pytest.raises(TypeError, match="unknown Pruner option"):
        Pruner(_model(), target=0.5, total_steps=10, ramps=0.1)
    with pytest.raises(ValueError, match="ramp \\+ finetune must be < 1"):
        Pruner(_model(), target=0.5, total_steps=10, ramp=0.6, finetune=0.5)
    model = _model()
    pruner = Pruner(model, target=0.5, total_steps=10, min_params=500)
    with pytest.raises(ValueError, match="already sparsified"):
        Pruner(model, target=0.5, total_steps=10)
    adasparse.desparsify(model)
    with pytest.raises(RuntimeError, match="model changed after the Pruner was built"):
        pruner.step()
    model = _model()
    pruner = Pruner(model, target=0.5, total_steps=10, min_params=500)
    pruner.finish()
    with pytest.raises(RuntimeError, match="already called"):
        pruner.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        pruner.step()


def test_original_method_with_the_same_object() -> None:
    model = _model()
    pruner = Pruner(
        model,
        target=0.9,
        total_steps=30,
        min_params=500,
        mode="adaptive",
        ramp=0.0,
        finetune=0.0,
        correction=False,
        threshold_update="optimizer",
    )
    groups = pruner.param_groups(lr=0.1, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["weights", "thresholds"]
    assert groups[1]["lr"] == pytest.approx(0.001) and groups[1]["weight_decay"] == 0.0
    assert float(pruner.loss()) > 0.0
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    _train(model, pruner, optimizer, range(30))
    pruner.finish()
    assert pruner.result is not None and pruner.result.reached  # calibrated at the end


def test_adam_threshold_update_keeps_thresholds_out_of_the_optimizer() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=30, min_params=500)
    thresholds = {id(p) for p in adasparse.threshold_parameters(model)}
    assert not any(id(p) in thresholds for g in pruner.param_groups(lr=0.1) for p in g["params"])


class _BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(32)
        self.conv2 = nn.Conv1d(32, 32, 5, padding=2)
        self.bn2 = nn.BatchNorm1d(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(-1))


@pytest.mark.parametrize("threshold_update", ["adam", "optimizer"])
def test_a_threshold_gradient_spike_cannot_push_a_threshold_out_of_range(threshold_update: str) -> None:
    torch.manual_seed(0)
    model = _BatchNormNet()
    steps = 60
    pruner = Pruner(model, target=0.98, total_steps=steps, min_params=0, threshold_update=threshold_update)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 40, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    conv2 = next(t for t in adasparse.pruned_tensors(model) if t.name == "conv2.weight")
    for step in range(steps):
        loss = F.cross_entropy(model(x), y) + pruner.loss()
        optimizer.zero_grad()
        loss.backward()
        if step == 20:  # right after the ramp: a BatchNorm-amplified gradient of 1e5 on one threshold
            conv2.threshold.grad = torch.tensor(-1e5)
        optimizer.step()
        pruner.step()
        for pruned in adasparse.pruned_tensors(model):
            assert 0.0 <= float(pruned.threshold) <= MAX_THRESHOLD
    report = pruner.freeze_result.report
    assert all(layer.actual < 0.999 for layer in report.layers), [layer.actual for layer in report.layers]


def test_magnitude_pruner_on_a_sparsified_model_says_desparsify_first() -> None:
    model = _model()
    adasparse.sparsify(model, target=0.5, min_params=500)
    with pytest.raises(ValueError, match="desparsify"):
        adasparse.magnitude.MagnitudePruner(model, min_params=500)


def test_readme_names_are_reachable_after_import() -> None:
    assert callable(adasparse.schedules.cubic_ramp)
    assert adasparse.magnitude.MagnitudePruner is not None
    assert adasparse.Pruner is Pruner and adasparse.PrunerConfig is PrunerConfig


def test_config_fields_carry_help_for_the_cli() -> None:
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(PrunerConfig))


def test_a_diverged_threshold_is_named_at_the_next_step() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=10, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    _train(model, pruner, optimizer, range(1))
    with torch.no_grad():
        model[2].weight_threshold.fill_(float("nan"))
        model[2].weight_orig.add_(1.0)  # an optimizer step happened
    with pytest.raises(ValueError, match="training diverged: the threshold of 2.weight"):
        pruner.step()


def _held_target_pruner(steps: int = 60) -> tuple[nn.Module, Pruner, torch.optim.Optimizer]:
    """A pruner past its ramp (the target held) and short of its fine-tuning, ``steps`` steps in."""
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=200, ramp=0.1, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    _train(model, pruner, optimizer, range(steps))
    return model, pruner, optimizer


def test_held_target_steps_check_thresholds_only_when_something_wrote_them(monkeypatch: pytest.MonkeyPatch) -> None:
    model, pruner, optimizer = _held_target_pruner(61)
    from adasparse.control import loss as loss_module

    checks: list[bool] = []
    check_finite = loss_module.check_finite

    def counting(tensors: list, weights: bool = True) -> list[float]:
        checks.append(weights)
        return check_finite(tensors, weights)

    monkeypatch.setattr(loss_module, "check_finite", counting)
    _train(model, pruner, optimizer, range(61, 103))
    # 42 steps of a held target: the two weight checks (every 20 steps) and nothing else; what the projection wrote
    # after each measurement is a layer-adaptive solution in [0, 5], which needs no check at the next step.
    assert checks == [True, True]
    solution = model[2].weight_threshold.item()
    with torch.no_grad():
        model[2].weight_threshold.fill_(7.5)  # written between steps (a user, a loaded state): checked again
    checks.clear()
    _train(model, pruner, optimizer, range(103, 104))
    assert checks == [False]
    assert model[2].weight_threshold.item() == solution


def test_a_threshold_replaced_while_the_target_is_held_is_projected_again_at_the_next_step() -> None:
    model, pruner, optimizer = _held_target_pruner(63)  # steps 61 and 62 came after the measurement at 60
    old = model[2].weight_threshold
    solution = old.item()
    replacement = nn.Parameter(torch.tensor(7.5))
    with torch.no_grad():
        while replacement._version < old._version:  # the same version count: only the identity tells them apart
            replacement.add_(0.0)
    assert replacement._version == old._version
    model[2].weight_threshold = replacement
    _train(model, pruner, optimizer, range(63, 64))
    assert model[2].weight_threshold is replacement and replacement.item() == solution


def test_a_threshold_written_while_the_target_is_held_is_checked_at_the_next_step() -> None:
    model, pruner, _ = _held_target_pruner(63)
    with torch.no_grad():
        model[2].weight_threshold.fill_(float("nan"))
        model[2].weight_orig.add_(1.0)  # an optimizer step happened
    with pytest.raises(ValueError, match="training diverged: the threshold of 2.weight"):
        pruner.step()


def test_a_threshold_moved_during_fine_tuning_is_clamped_at_the_next_step() -> None:
    model, pruner, optimizer = _held_target_pruner(170)
    assert pruner.frozen
    with torch.no_grad():
        model[2].weight_threshold.fill_(-3.0)
    _train(model, pruner, optimizer, range(170, 171))
    assert model[2].weight_threshold.item() == 0.0
    with torch.no_grad():
        model[2].weight_threshold.fill_(9.0)
    _train(model, pruner, optimizer, range(171, 172))
    assert model[2].weight_threshold.item() == MAX_THRESHOLD


def test_the_default_loss_is_a_zero_of_the_thresholds_dtype() -> None:
    model = _model().double()
    pruner = Pruner(model, target=0.9, total_steps=10, min_params=500)
    loss = pruner.loss()
    assert loss.dtype == torch.float64 and loss.item() == 0.0 and not loss.requires_grad
    assert not pruner.penalises


def test_penalises_says_when_the_loss_is_a_penalty() -> None:
    """The original modes' loss is a penalty of the thresholds until the zeros are fixed, then a constant zero."""
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=10, min_params=500, mode="adaptive", finetune=0.5)
    assert pruner.penalises and pruner.loss().requires_grad
    pruner.freeze()
    assert not pruner.penalises and pruner.loss().item() == 0.0 and not pruner.loss().requires_grad


class _WithUnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
        self.pooler = nn.Linear(64, 64)  # never called: the loss does not reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_a_layer_the_loss_never_reaches_gives_up_its_weights_first(target: float) -> None:
    model = _WithUnusedLayer()
    pruner = Pruner(model, target=target, total_steps=40, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    x, y = _data()
    for step in range(40):
        batch = slice(step % 8 * 32, step % 8 * 32 + 32)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
    result = pruner.freeze_result
    assert result.reached
    layers = {layer.name: layer for layer in result.report.layers}
    budget = round(target * result.report.pruned_params)
    unused = layers["pooler.weight"]
    used_zeros = layers["body.0.weight"].zeros + layers["body.2.weight"].zeros
    if budget <= unused.numel:  # the unused layer alone carries the whole budget
        assert unused.zeros == pytest.approx(budget, abs=2) and used_zeros <= 2
    else:  # fully pruned, the used layers share only the rest
        assert unused.actual > 0.999 and used_zeros == pytest.approx(budget - unused.zeros, abs=2)


def test_gradients_cleared_before_step_do_not_mark_layers_unreached() -> None:
    model = _model()
    pruner = Pruner(model, target=0.5, total_steps=20, min_params=500, finetune=0.0)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    x, y = _data()
    with pytest.warns(UserWarning, match="before optimizer.zero_grad"):
        for _ in range(3):
            F.cross_entropy(model(x[:32]), y[:32]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            pruner.step()
    assert not any(pruner.criterion.idle)


def test_a_pretrained_model_is_unchanged_at_step_zero() -> None:
    model = _model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05)  # weights with a mean, as trained layers have
    reference = copy.deepcopy(model)
    Pruner(model, target=0.9, total_steps=100, min_params=500)
    x, _ = _data()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_the_centring_is_kept_in_the_state_dict_and_by_exports() -> None:
    from adasparse.export import plain_state_dict

    for centred in (True, False):
        model = _model()
        with torch.no_grad():
            model[2].weight.add_(0.1)
        adasparse.sparsify(model, target=0.5, min_params=500, centred=centred)
        adasparse.calibrate(model, 0.5)
        state = model.state_dict()
        assert bool(state["2.weight_centred"]) is centred
        fresh = _model()
        adasparse.sparsify(fresh, target=0.5, min_params=500, centred=not centred)
        fresh.load_state_dict(state)  # the state's operator wins
        expected = adasparse.desparsify(copy.deepcopy(model)).state_dict()
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
        assert all(torch.equal(plain_state_dict(state)[k], v) for k, v in expected.items())
        baked = adasparse.desparsify(fresh).state_dict()
        assert all(torch.equal(baked[k], v) for k, v in expected.items())
    old = {k: v for k, v in state.items() if not k.endswith("_centred")}  # written before the key existed
    model = _model()
    adasparse.sparsify(model, target=0.5, min_params=500)
    model.load_state_dict(old)
    assert bool(model.state_dict()["2.weight_centred"]) is True


def test_total_steps_can_be_set_after_construction_before_the_first_step() -> None:
    def run(late: bool) -> dict[str, torch.Tensor]:
        model = _model()
        pruner = Pruner(model, target=0.9, total_steps=None if late else 20, min_params=500)
        optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
        if late:
            assert pruner.total_steps is None and pruner.freeze_step is None
            assert "step 0/?" in repr(pruner)
            pruner.total_steps = 20
        _train(model, pruner, optimizer, range(20))
        return pruner.finish().state_dict()

    expected, late = run(late=False), run(late=True)
    assert all(torch.equal(expected[key], late[key]) for key in expected)


def test_total_steps_unset_or_changed_mid_run_is_refused() -> None:
    model = _model()
    pruner = Pruner(model, target=0.9, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05))
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        pruner.total_steps = 0
    with pytest.raises(ValueError, match="set pruner.total_steps before loading"):
        pruner.load_state_dict(Pruner(_model(), target=0.9, total_steps=10, min_params=500).state_dict())
    with pytest.raises(RuntimeError, match="built without total_steps"):
        _train(model, pruner, optimizer, range(1))
    pruner.total_steps = 5
    pruner.total_steps = 10  # still before the first step
    _train(model, pruner, optimizer, range(1, 2))
    pruner.total_steps = 10  # the same value is accepted
    with pytest.raises(RuntimeError, match="cannot change after the first step"):
        pruner.total_steps = 20


def test_a_layer_whose_weights_blew_past_float32_squares_keeps_its_share_of_the_budget() -> None:
    # A BatchNorm run's weights reached 3e20: the float32 spread of that layer read inf, its threshold fell to zero,
    # the layer kept every weight and the run ended 17 points under its target.
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=60, min_params=500)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    _train(model, pruner, optimizer, range(40))
    with torch.no_grad():
        model[2].weight_orig.mul_(3e20)  # the layer's scale alone: LAMP's allocation does not see it
    for group in optimizer.param_groups:
        group["lr"] = 0.0  # steps that move no weight: the projection alone decides the zeros from here
    _train(model, pruner, optimizer, range(40, 60))
    pruner.finish()
    report = adasparse.sparsity_report(model, min_params=500)
    assert abs(report.pruned_zeros - 0.9 * report.pruned_params) <= 1
    assert 0.5 < report.layers[1].actual < 1.0  # the blown-up layer is pruned like its neighbours


def _dead_channel_model(bound: float | None, layers: str = "normalized") -> tuple[nn.Module, torch.Tensor, Pruner]:
    """A 1x1 convolution + BatchNorm whose first output channel has every weight pruned, and its weight gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10)
    )
    pruner = Pruner(model, 0.9, 100, min_params=200, pruned_gradient_bound=bound, pruned_gradient_bound_layers=layers)
    with torch.no_grad():
        model[0].weight_orig[0].mul_(1e-3)
        model[0].weight_threshold.fill_(1.0)
        model[1].bias.fill_(0.5)  # the channel's constant output passes the ReLU
    x, y = torch.randn(16, 8, 4, 4), torch.randint(0, 10, (16,))
    with torch.no_grad():
        model(x)  # the first forward pass finds the layers a BatchNorm reads
    F.cross_entropy(model(x), y).backward()
    return model, model[0].weight_orig.grad, pruner


def test_a_pruned_gradient_bound_tames_what_batchnorm_sends_an_empty_channel() -> None:
    model, free, _ = _dead_channel_model(None)
    kept = model[0].weight.detach() != 0
    assert not kept[0].any()
    live = free[kept].pow(2).mean().sqrt()
    assert free[0].abs().max() > 100 * live  # BatchNorm divides the empty channel's gradient by sqrt(eps)
    bounded_model, bounded, _ = _dead_channel_model(3.0)
    assert torch.equal(bounded_model[0].weight.detach() != 0, kept)
    assert torch.equal(bounded[kept], free[kept])  # kept weights keep their gradient
    assert bounded[~kept].abs().max() <= 3.0 * live * (1 + 1e-6)
    assert adasparse.pruned_tensors(bounded_model)[0].gradient_bound == 3.0


def test_the_default_bounds_only_the_layers_a_batchnorm_reads() -> None:
    assert PrunerConfig().pruned_gradient_bound == 3.0 and PrunerConfig().pruned_gradient_bound_layers == "normalized"
    model, _, pruner = _dead_channel_model(3.0)
    assert pruner.bounded_layers == ["0.weight"]  # the classifier feeds no norm
    assert [t.gradient_bound for t in adasparse.pruned_tensors(model)] == [3.0, None]
    assert pruner.state_dict()["bounded"] == [True, False]
    pruner.finish()
    assert "_adasparse_gradient_bounds" not in vars(model[0])
    model, _, pruner = _dead_channel_model(3.0, layers="all")
    assert pruner.bounded_layers == ["0.weight", "4.weight"]
    model, _, pruner = _dead_channel_model(None)
    assert pruner.bounded_layers is None and pruner.state_dict()["bounded"] is None


def test_a_bound_found_later_applies_from_the_second_forward_and_a_plain_model_stays_bit_identical() -> None:
    # Nothing reads a norm here: the default's first forward pass finds that and the run is the unbounded one.
    runs = []
    for bound in (3.0, None):
        model = _model()
        pruner = Pruner(model, target=0.9, total_steps=60, min_params=500, pruned_gradient_bound=bound)
        optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
        _train(model, pruner, optimizer, range(60))
        assert pruner.bounded_layers in ([], None)
        runs.append(pruner.finish().state_dict())
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])


def test_a_resumed_pruner_bounds_the_layers_it_found_before_any_forward_pass() -> None:
    model, _, pruner = _dead_channel_model(3.0)
    state = pruner.state_dict()
    torch.manual_seed(0)
    fresh = copy.deepcopy(model)
    adasparse.desparsify(fresh)
    resumed = Pruner(fresh, 0.9, 100, min_params=200)
    assert resumed.bounded_layers is None
    resumed.load_state_dict(state)
    assert resumed.bounded_layers == ["0.weight"]
    assert [t.gradient_bound for t in adasparse.pruned_tensors(fresh)] == [3.0, None]
    assert resumed._norm_inputs is not None and resumed._norm_inputs.done  # the search was called off


def test_the_pruned_gradient_bound_is_checked_and_left_out_of_old_states() -> None:
    with pytest.raises(ValueError, match="pruned_gradient_bound must be"):
        PrunerConfig(pruned_gradient_bound=0.0).validated()
    with pytest.raises(ValueError, match="pruned_gradient_bound_layers must be one of"):
        PrunerConfig(pruned_gradient_bound_layers="batchnorm").validated()
    model = _model()
    pruner = Pruner(model, target=0.9, total_steps=60, min_params=500, pruned_gradient_bound=None)
    state = pruner.state_dict()
    del state["config"]["pruned_gradient_bound"], state["config"]["pruned_gradient_bound_layers"]  # an old state
    Pruner(_model(), target=0.9, total_steps=60, min_params=500, pruned_gradient_bound=None).load_state_dict(state)
    with pytest.raises(ValueError, match="other settings"):
        Pruner(_model(), target=0.9, total_steps=60, min_params=500).load_state_dict(state)
    bounded = Pruner(_model(), target=0.9, total_steps=60, min_params=500, pruned_gradient_bound_layers="all")
    bounded_state = bounded.state_dict()
    del bounded_state["config"]["pruned_gradient_bound_layers"]  # written when the bound acted on every layer
    Pruner(_model(), target=0.9, total_steps=60, min_params=500, pruned_gradient_bound_layers="all").load_state_dict(
        bounded_state
    )
    with pytest.raises(ValueError, match="other settings"):
        Pruner(_model(), target=0.9, total_steps=60, min_params=500).load_state_dict(bounded_state)


def test_layers_pruned_by_blocks_take_no_bound() -> None:
    model = _model()
    pruner = Pruner(model, 0.9, 60, min_params=500, granularity="block:2x2", pruned_gradient_bound_layers="all")
    assert pruner.bounded_layers == []
    assert all(t.gradient_bound is None for t in adasparse.pruned_tensors(model))


def test_a_model_saved_or_copied_before_its_first_forward_pass_carries_no_search() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    pruner = Pruner(model, 0.9, 60, min_params=500)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the whole model pickles: the search leaves nothing on it
    twin = copy.deepcopy(model)
    twin(torch.randn(4, 20))  # a copy's forward pass is not the model's
    assert pruner.bounded_layers is None
    model(torch.randn(4, 20))
    assert pruner.bounded_layers == ["0.weight"]
    buffer.seek(0)
    assert isinstance(torch.load(buffer, weights_only=False), nn.Sequential)
