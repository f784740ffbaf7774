"""Persistence of sparsified models: state_dict, deepcopy, pickle, torch.save, resume mid-training."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse
from adasparse.core.parametrization import attach, detach

from ..zoo import ZOO, ZooEntry, first_output


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, groups=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )


def test_state_dict_keys_and_round_trip_with_weights_only(tmp_path) -> None:
    model = adasparse.sparsify(_net(), target=0.9)
    with torch.no_grad():
        for r in adasparse.threshold_parameters(model):
            r.fill_(1.3)
    keys = list(model.state_dict())
    assert keys[:5] == ["0.weight", "0.bias", "2.weight_orig", "2.weight_threshold", "2.bias"]  # conv 0 < 1000
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    fresh = adasparse.sparsify(_net(), target=0.5)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh(x), model(x))
    plain = _net()
    with pytest.raises(RuntimeError, match="weight_orig"):
        plain.load_state_dict(torch.load(path, weights_only=True))


def test_deepcopy_is_independent_of_the_original() -> None:
    model = adasparse.sparsify(_net(), target=0.9)
    clone = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8)
    adasparse.desparsify(clone)
    assert not any(adasparse.is_sparsified(m) for m in clone.modules())
    out = model(x)  # the original still works: the generated class was not mutated
    assert adasparse.is_sparsified(model[2])
    torch.testing.assert_close(clone.eval()(x), model.eval()(x))
    assert out.shape == (2, 10)
    assert clone[2].weight is not model[2].weight_orig


@pytest.mark.parametrize("entry", ZOO, ids=[e.name for e in ZOO])
def test_pickle_and_torch_save_whole_model(entry: ZooEntry) -> None:
    model = adasparse.sparsify(entry.make(), target=0.8, min_params=100, include=entry.include)
    inputs = entry.inputs()
    expected = first_output(model(*inputs))
    restored = pickle.loads(pickle.dumps(model))
    assert type(restored) is type(model)
    torch.testing.assert_close(first_output(restored(*inputs)), expected)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(first_output(loaded(*inputs)), expected)
    adasparse.desparsify(loaded)
    assert type(loaded) is adasparse.original_class(model)


def test_saving_mid_training_and_resuming_gives_identical_numbers(tmp_path) -> None:
    torch.manual_seed(1)
    data = [(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))) for _ in range(6)]

    def make() -> tuple[nn.Module, torch.optim.Optimizer, adasparse.SparsityLoss]:
        torch.manual_seed(2)
        model = adasparse.sparsify(_net(), target=0.9)
        optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.05, weight_decay=5e-4), momentum=0.9)
        return model, optimizer, adasparse.SparsityLoss(model, target=0.9)

    def train(model, optimizer, criterion, batches) -> None:
        for x, y in batches:
            optimizer.zero_grad()
            (F.cross_entropy(model(x), y) + criterion()).backward()
            optimizer.step()

    straight = make()
    train(*straight, data)

    first = make()
    train(*first, data[:3])
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": first[0].state_dict(), "optimizer": first[1].state_dict(), "loss": first[2].state_dict()}, path
    )
    resumed = make()
    state = torch.load(path, weights_only=True)
    resumed[0].load_state_dict(state["model"])
    resumed[1].load_state_dict(state["optimizer"])
    resumed[2].load_state_dict(state["loss"])
    train(*resumed, data[3:])
    for (name, a), (_, b) in zip(straight[0].state_dict().items(), resumed[0].state_dict().items()):
        assert torch.equal(a, b), name


def test_parameter_order_is_kept() -> None:
    module = nn.Linear(50, 50)
    attach(module, ("weight",), {"weight": 1.0}, trainable=True)
    assert list(module._parameters) == ["weight_orig", "weight_threshold", "bias"]
    detach(module, bake=False)
    assert list(module._parameters) == ["weight", "bias"]
    assert type(module) is nn.Linear


def test_detach_without_bake_restores_raw_weight() -> None:
    module = nn.Linear(50, 50)
    raw = module.weight.detach().clone()
    attach(module, ("weight",), {"weight": 2.0}, trainable=True)
    detach(module, bake=False)
    assert torch.equal(module.weight, raw)
    with pytest.raises(ValueError, match="is not sparsified"):
        detach(module)
