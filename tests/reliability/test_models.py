"""Models of unusual structure: shared (tied) weights, models built on the meta device, zero-element weights.

Each case failed before it was fixed (docs/reliability.md, "Models")."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.parametrization import freeze


class TiedLM(nn.Module):
    """A language-model shape: token embedding, a hidden layer, and an LM head sharing the embedding's weight."""

    def __init__(self, vocab: int = 50, dim: int = 40) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.embed(tokens))))


def _tied_linears() -> nn.Module:
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64))
    model[2].weight = model[0].weight
    return model


def _tokens() -> torch.Tensor:
    return torch.randint(0, 50, (4, 7), generator=torch.Generator().manual_seed(0))


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# -- shared (tied) weights ------------------------------------------------------------------------------------------


def test_tied_embedding_and_head_see_one_pruned_weight() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    keys = list(model.state_dict())
    adasparse.sparsify(model, target=0.5)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["hidden.weight", "head.weight"]
    shared = model.head.weight
    assert float((shared == 0).float().mean()) > 0.2
    assert torch.equal(model.embed.weight, shared)  # the embedding looks up the pruned weight too
    names = [name for name, _ in model.named_parameters()]
    assert sum(name.endswith("_threshold") for name in names) == 2  # one threshold for the shared weight
    x = _tokens()
    before = _outputs(model, x)
    adasparse.desparsify(model)
    assert torch.equal(_outputs(model, x), before)
    assert model.embed.weight is model.head.weight  # still one Parameter, in plain modules
    assert type(model.embed) is nn.Embedding and type(model.head) is nn.Linear
    assert list(model.state_dict()) == keys


def test_tied_linears_train_calibrate_freeze_and_desparsify_as_one_tensor() -> None:
    torch.manual_seed(0)
    model = _tied_linears()
    with pytest.warns(UserWarning, match="tied weights"):
        adasparse.sparsify(model, target=0.8)
    pruned = adasparse.pruned_tensors(model)
    assert [p.name for p in pruned] == ["0.weight"]
    assert torch.equal(model[2].weight, model[0].weight)
    criterion = adasparse.SparsityLoss(model, target=0.8, mode="adaptive", weight=10.0)
    optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.05), lr=0.05)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean() + criterion()
        loss.backward()
        optimizer.step()
        criterion.step()
    assert torch.equal(model[2].weight, model[0].weight)
    result = adasparse.calibrate(model, 0.6)
    assert result.reached
    report = adasparse.sparsity_report(model)
    assert len(report.layers) == 1 and report.pruned_params == 64 * 64
    assert report.total_params == sum(p.numel() for p in model.parameters()) - 1  # less the threshold
    assert abs(report.pruned_zeros - 0.6 * 64 * 64) <= 1
    freeze(pruned[0].module, pruned[0].tensor_name)
    assert torch.equal(model[2].weight, model[0].weight)
    before = _outputs(model, x)
    adasparse.desparsify(model)
    assert torch.equal(_outputs(model, x), before)
    assert model[0].weight is model[2].weight
    assert abs(int((model[0].weight == 0).sum()) - 0.6 * 64 * 64) <= 1  # baked once, not twice


def test_tied_state_dict_round_trip_deepcopy_pickle_and_dtype_keep_the_tie() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    adasparse.sparsify(model, target=0.5)
    with torch.no_grad():
        for threshold in adasparse.threshold_parameters(model):
            threshold.add_(0.3)
    x = _tokens()
    expected = _outputs(model, x)
    fresh = TiedLM()
    adasparse.sparsify(fresh, target=0.5)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(_outputs(fresh, x), expected)
    assert torch.equal(fresh.embed.weight, fresh.head.weight)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert torch.equal(_outputs(clone, x), expected)
        with torch.no_grad():
            for threshold in adasparse.threshold_parameters(clone):
                threshold.fill_(2.0)
        assert torch.equal(clone.embed.weight, clone.head.weight)  # the copy's modules are tied to each other
        assert not torch.equal(clone.head.weight, model.head.weight)  # and not to the original
    pruned = {p.name: p for p in adasparse.pruned_tensors(model)}["head.weight"]
    freeze(pruned.module, pruned.tensor_name)
    model.double()  # moving a model replaces its buffers (the mask): the tie must survive it
    assert model.embed.weight.dtype == torch.float64
    assert torch.equal(model.embed.weight, model.head.weight)


def test_excluding_one_user_of_a_shared_weight_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"embed\.weight.*head\.weight|head\.weight.*embed\.weight"):
        adasparse.sparsify(TiedLM(), target=0.5, exclude=nn.Embedding)
    with pytest.raises(ValueError, match=r"2\.weight.*0\.weight|0\.weight.*2\.weight"):
        adasparse.sparsify(_tied_linears(), target=0.5, exclude="2")


def test_assigning_to_a_tied_users_weight_is_refused() -> None:
    model = TiedLM()
    adasparse.sparsify(model, target=0.5)
    with pytest.raises(TypeError, match="desparsify"):
        model.embed.weight = nn.Parameter(torch.zeros(50, 40))


# -- meta device ----------------------------------------------------------------------------------------------------


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


def test_sparsify_on_meta_then_to_empty_and_load_a_sparsified_state() -> None:
    torch.manual_seed(0)
    reference = adasparse.sparsify(_mlp(), target=0.7)
    with torch.no_grad():
        next(adasparse.threshold_parameters(reference)).add_(0.5)
    with torch.device("meta"):
        model = _mlp()
    adasparse.sparsify(model, target=0.7)
    assert all(t.is_meta for t in adasparse.threshold_parameters(model))
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))
    report = adasparse.sparsity_report(model)
    assert report.pruned_zeros == adasparse.sparsity_report(reference).pruned_zeros


def test_sparsify_on_meta_then_real_weights_and_reset_thresholds() -> None:
    torch.manual_seed(0)
    plain = _mlp()
    reference = adasparse.sparsify(copy.deepcopy(plain), target=0.7)
    with torch.device("meta"):
        model = _mlp()
    adasparse.sparsify(model, target=0.7)
    with pytest.raises(ValueError, match="meta"):
        adasparse.reset_thresholds(model, target=0.7)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for module, source in zip(model, plain):
            for name, value in source.named_parameters():
                key = name + "_orig" if adasparse.is_sparsified(module) and name == "weight" else name
                module._parameters[key].copy_(value)
    adasparse.reset_thresholds(model, target=0.7)
    for mine, theirs in zip(adasparse.threshold_parameters(model), adasparse.threshold_parameters(reference)):
        assert torch.equal(mine, theirs) and mine.requires_grad
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))


def test_sparsify_inside_the_meta_device_context() -> None:
    with torch.device("meta"):
        model = adasparse.sparsify(_mlp(), target=0.7)
        assert all(t.is_meta for t in adasparse.threshold_parameters(model))
    reference = adasparse.sparsify(_mlp(), target=0.7)
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))


def test_tied_model_on_meta_keeps_its_tie_through_to_empty() -> None:
    torch.manual_seed(0)
    reference = adasparse.sparsify(TiedLM(), target=0.5)
    with torch.device("meta"):
        model = TiedLM()
    adasparse.sparsify(model, target=0.5)
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = _tokens()
    assert torch.equal(_outputs(model, x), _outputs(reference, x))
    assert torch.equal(model.embed.weight, model.head.weight)


# -- zero-element weights -------------------------------------------------------------------------------------------


class WithEmptyLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(16, 8)
        self.empty = nn.Linear(0, 8)  # a zero-element weight: its output is its bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.empty(x[:, :0])


def test_zero_element_weight_with_min_params_zero_works_end_to_end() -> None:
    torch.manual_seed(0)
    model = WithEmptyLayer()
    adasparse.sparsify(model, target=0.5, min_params=0)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["body.weight"]
    x = torch.randn(4, 16)
    criterion = adasparse.SparsityLoss(model, target=0.5)
    (model(x).sum() + criterion()).backward()
    adasparse.calibrate(model, 0.5)
    report = adasparse.sparsity_report(model)
    assert report.pruned_params == 16 * 8
    before = _outputs(model, x)
    adasparse.desparsify(model)
    assert torch.equal(_outputs(model, x), before)
    assert adasparse.sparsity_report(model, min_params=0).pruned_params == 16 * 8


def test_compute_cost_of_a_shared_weight_counts_every_module_using_it() -> None:
    model = _tied_linears()
    with pytest.warns(UserWarning, match="tied weights"):
        adasparse.sparsify(model, target=0.5)
    assert adasparse.flops.layer_macs(model, torch.randn(2, 64)) == {"0.weight": 2 * 64 * 64}
    lm = adasparse.sparsify(TiedLM(), target=0.5)
    assert adasparse.flops.layer_macs(lm, _tokens()) == {"hidden.weight": 7 * 40 * 40, "head.weight": 7 * 40 * 50}
