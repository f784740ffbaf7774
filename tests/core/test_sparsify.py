"""sparsify / desparsify on every module kind: same computation, gradients, class identity, life cycle."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.operator import threshold_for_sparsity

from ..zoo import ZooEntry, first_output


def _sparsify_entry(entry: ZooEntry, module: nn.Module, **kwargs: object) -> nn.Module:
    return adasparse.sparsify(module, target=0.9, min_params=100, include=entry.include, **kwargs)


def _dense_twin(entry: ZooEntry, sparse: nn.Module, plain: nn.Module) -> nn.Module:
    """A plain copy of the module whose pruned tensors hold the effective weights."""
    twin = copy.deepcopy(plain)
    with torch.no_grad():
        for pruned in adasparse.pruned_tensors(sparse):
            target = twin.get_submodule(pruned.module_name)
            getattr(target, pruned.tensor_name).copy_(pruned.effective())
    return twin


def test_output_equals_dense_op_on_thresholded_weight(zoo: ZooEntry) -> None:
    plain = zoo.make()
    sparse = _sparsify_entry(zoo, copy.deepcopy(plain))
    names = {p.tensor_name for p in adasparse.pruned_tensors(sparse) if p.module is sparse}
    assert names == set(zoo.tensor_names)
    twin = _dense_twin(zoo, sparse, plain)
    inputs = zoo.inputs()
    torch.testing.assert_close(first_output(sparse(*inputs)), first_output(twin(*inputs)))
    sparse.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(first_output(sparse(*inputs)), first_output(twin(*inputs)))


def test_gradients_reach_weights_and_thresholds(zoo: ZooEntry) -> None:
    module = _sparsify_entry(zoo, zoo.make())
    first_output(module(*zoo.inputs())).pow(2).sum().backward()
    for pruned in adasparse.pruned_tensors(module):
        assert pruned.raw.grad is not None and pruned.raw.grad.abs().sum() > 0, pruned.name
        assert pruned.threshold.grad is not None and pruned.threshold.grad != 0, pruned.name


def test_module_keeps_its_class_and_attributes(zoo: ZooEntry) -> None:
    plain = zoo.make()
    base = type(plain)
    calls: list[str] = []
    plain.register_forward_hook(lambda *args: calls.append("hook"))
    module = _sparsify_entry(zoo, plain)
    assert isinstance(module, base)
    assert type(module).__name__ == base.__name__ and type(module).__module__ == base.__module__
    assert adasparse.original_class(module) is base and adasparse.is_sparsified(module)
    module(*zoo.inputs())
    assert calls == ["hook"]
    for name in zoo.tensor_names:
        assert getattr(module, name).shape == module._parameters[name + "_orig"].shape
        assert name not in dict(module.named_parameters())
    assert "sparsified=" in repr(module)


def test_desparsify_restores_plain_modules_with_equal_outputs(zoo: ZooEntry) -> None:
    plain = zoo.make()
    keys = list(plain.state_dict().keys())
    module = _sparsify_entry(zoo, copy.deepcopy(plain))
    raw_objects = [p.raw for p in adasparse.pruned_tensors(module)]
    inputs = zoo.inputs()
    module.eval()
    with torch.no_grad():
        expected = first_output(module(*inputs))
    adasparse.desparsify(module)
    assert type(module) is type(plain)
    assert list(module.state_dict().keys()) == keys
    assert not any(name.endswith("_threshold") for name, _ in module.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(first_output(module(*inputs)), expected)
    # The very Parameter objects survive (optimizers holding them keep working).
    params = {id(p) for p in module.parameters()}
    assert all(id(p) in params for p in raw_objects)


def test_min_params_is_respected() -> None:
    model = nn.Sequential(nn.Linear(10, 99), nn.Linear(99, 20), nn.Linear(20, 50))  # 990, 1980, 1000 weights
    adasparse.sparsify(model, target=0.5)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["1.weight", "2.weight"]
    assert not adasparse.is_sparsified(model[0])


def test_default_and_fixed_initial_thresholds() -> None:
    model = adasparse.sparsify(nn.Linear(100, 100), target=0.9)
    assert model.weight_threshold.item() == pytest.approx(threshold_for_sparsity(0.54), rel=1e-6)
    assert model.weight_threshold.requires_grad
    gaussian = nn.Linear(100, 100)
    nn.init.normal_(gaussian.weight)
    frozen = adasparse.sparsify(gaussian, target=0.9, trainable=False)
    assert frozen.weight_threshold.item() == pytest.approx(math.sqrt(2) * 1.1630871536766743, rel=1e-6)
    assert not frozen.weight_threshold.requires_grad
    actual = float((frozen.weight == 0).float().mean())
    assert 0.88 < actual < 0.92  # erfinv(target), not erfinv(1 - target): the reference's defect is not copied
    explicit = adasparse.sparsify(nn.Linear(100, 100), target=0.9, init_threshold=2.0)
    assert explicit.weight_threshold.item() == 2.0


def test_threshold_parameters_and_param_groups() -> None:
    model = adasparse.sparsify(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32)), target=0.8)
    thresholds = list(adasparse.threshold_parameters(model))
    assert [t.shape for t in thresholds] == [torch.Size([]), torch.Size([])]
    groups = adasparse.param_groups(model, lr=0.1, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["weights", "thresholds"]
    assert groups[1]["lr"] == pytest.approx(0.001) and groups[1]["weight_decay"] == 0.0
    assert groups[0]["weight_decay"] == 5e-4 and len(groups[0]["params"]) == 4
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters()}
    torch.optim.SGD(groups, momentum=0.9)
    assert len(adasparse.param_groups(nn.Linear(3, 3), lr=0.1)) == 1
    with pytest.raises(ValueError, match="lr must be >= 0"):
        adasparse.param_groups(model, lr=-1)
    with pytest.raises(ValueError, match="threshold_lr_scale must be >= 0"):
        adasparse.param_groups(model, lr=0.1, threshold_lr_scale=-0.5)


def test_assigning_a_parameter_replaces_the_raw_weight() -> None:
    model = adasparse.sparsify(nn.Linear(50, 50), target=0.5)
    new = nn.Parameter(torch.randn(50, 50))
    model.weight = new
    assert model.weight_orig is new
    with pytest.raises(TypeError, match="assign an nn.Parameter"):
        model.weight = torch.randn(50, 50)
    with pytest.raises(ValueError, match="must keep its shape"):
        model.weight = nn.Parameter(torch.randn(5, 5))
    model.bias = nn.Parameter(torch.zeros(50))  # other attributes behave as usual
    assert "bias" in dict(model.named_parameters())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target": 1.0}, r"target must be in \[0, 1\), got 1.0"),
        ({"target": -0.1}, r"target must be in \[0, 1\)"),
        ({"target": float("nan")}, "target must be finite"),
        ({"target": "0.9"}, "target must be a number"),
        ({}, "needs target"),
        ({"target": 0.9, "min_params": -1}, "min_params must be an integer >= 0"),
        ({"target": 0.9, "min_params": 2.5}, "min_params must be an integer >= 0"),
        ({"init_threshold": -1.0}, "init_threshold must be >= 0"),
        ({"init_threshold": 6.0}, r"init_threshold must be in \[0, 5.0\]"),
        ({"target": 0.9, "min_params": 10**9}, "no prunable layer with at least min_params=1000000000"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        adasparse.sparsify(nn.Linear(100, 100), **kwargs)


def test_errors_on_misuse() -> None:
    model = adasparse.sparsify(nn.Sequential(nn.Linear(100, 100)), target=0.5)
    with pytest.raises(ValueError, match="already sparsified"):
        adasparse.sparsify(model, target=0.5)
    with pytest.raises(ValueError, match="nothing to desparsify"):
        adasparse.desparsify(nn.Linear(100, 100))
    with pytest.raises(ValueError, match="no prunable layer"):
        adasparse.sparsify(nn.Sequential(nn.ReLU(), nn.LayerNorm(10)), target=0.5)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        adasparse.sparsify("model", target=0.5)  # type: ignore[arg-type]
    broken = nn.Linear(100, 100)
    with torch.no_grad():
        broken.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="0?weight has non-finite values"):
        adasparse.sparsify(broken, target=0.5)
    diverged = adasparse.sparsify(nn.Linear(100, 100), target=0.5)
    with torch.no_grad():
        diverged.weight_orig[1, 1] = float("inf")
    with pytest.raises(ValueError, match="non-finite values"):
        adasparse.desparsify(diverged)


def test_integer_weights_and_lazy_modules_are_rejected() -> None:
    class IntWeights(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(100, 20, dtype=torch.int32), requires_grad=False)

    with pytest.raises(TypeError, match="only floating weights can be pruned"):
        adasparse.sparsify(nn.Sequential(IntWeights()), target=0.5, include=IntWeights)
    lazy = nn.Sequential(nn.LazyLinear(100))
    with pytest.raises(ValueError, match="run one forward pass before sparsify"):
        adasparse.sparsify(lazy, target=0.5)
    lazy(torch.randn(2, 50))
    adasparse.sparsify(lazy, target=0.5)
    assert adasparse.is_sparsified(lazy[0])


def test_constant_layer_prunes_to_zero_without_nan() -> None:
    model = nn.Linear(100, 100)
    nn.init.zeros_(model.weight)
    adasparse.sparsify(model, target=0.9)
    out = model(torch.randn(3, 100))
    out.sum().backward()
    assert torch.isfinite(model.weight_threshold.grad)
    assert torch.equal(model.weight, torch.zeros(100, 100))


def test_task_gradient_can_be_stopped() -> None:
    torch.manual_seed(0)
    model = adasparse.sparsify(nn.Linear(100, 100), target=0.9, task_gradient=False)
    model(torch.randn(8, 100)).pow(2).sum().backward()
    assert model.weight_threshold.grad is None and model.weight_orig.grad is not None
    criterion = adasparse.SparsityLoss(model, target=0.9)
    criterion().backward()
    assert model.weight_threshold.grad < 0
    clone = copy.deepcopy(model)
    clone(torch.randn(2, 100)).sum().backward()
    assert clone.weight_threshold.grad is None
    adasparse.desparsify(model)
    assert "_adasparse_task_gradient" not in model.__dict__
