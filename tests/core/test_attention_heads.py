"""Declared attention heads (AttentionHeads): a user's attention module and Hugging Face's BERT, pruned by heads."""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import adasparse
from adasparse import AttentionHeads
from adasparse.core.attention_heads import AttentionHeadSet
from adasparse.core.channel_sets import ChannelSet
from adasparse.core.flops import layer_macs
from adasparse.core.parametrization import freeze

from ..zoo import ATTENTION_HEADS, Attention, AttentionNet, BertClassifier, bert_heads

pytest.importorskip("torch_pruning")


def _user(seed: int = 0) -> tuple[nn.Module, torch.Tensor, dict]:
    torch.manual_seed(seed)
    return AttentionNet(), torch.randn(3, 5, 8), ATTENTION_HEADS


def _bert(seed: int = 0) -> tuple[nn.Module, torch.Tensor, dict]:
    pytest.importorskip("transformers")
    torch.manual_seed(seed)
    return BertClassifier().eval(), torch.randint(0, 50, (3, 6)), bert_heads()


MODELS = {"user": _user, "bert": _bert}


def _sparsified(kind: str, r: float = 1.0, seed: int = 0) -> tuple[nn.Module, torch.Tensor, dict]:
    model, x, heads = MODELS[kind](seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(model, init_threshold=r, min_params=100, granularity="channel", example_input=x, heads=heads)
    return model, x, heads


def _sets(model: nn.Module) -> list[ChannelSet]:
    return list({id(p.layout): p.layout for p in adasparse.pruned_tensors(model)}.values())


def _head_sets(model: nn.Module) -> list[AttentionHeadSet]:
    return [s for s in _sets(model) if isinstance(s, AttentionHeadSet)]


def test_declared_layers_form_one_head_set_and_the_residual_stream_stays_dense() -> None:
    model, x, heads = _user()
    with pytest.warns(UserWarning, match=r"embed \(tied to blocks\.0\.attn\.q_proj \(a layer of declared attention"):
        adasparse.sparsify(
            model, init_threshold=1.0, min_params=100, granularity="channel", example_input=x, heads=heads
        )
    head_sets = _head_sets(model)
    assert [s.module_name for s in head_sets] == ["blocks.0.attn", "blocks.1.attn"]
    assert [s.heads for s in head_sets] == [4, 4] and head_sets[0].width == 8
    attn = model.blocks[0].attn
    assert (
        head_sets[0].names == ["blocks.0.attn.q_proj"] * 2 + ["blocks.0.attn.k_proj"] * 2 + ["blocks.0.attn.v_proj"] * 2
    )
    assert [c.name for c in head_sets[0].consumers] == ["blocks.0.attn.out_proj"]
    assert attn.q_proj.weight_threshold is attn.v_proj.bias_threshold
    declared = {id(m) for s in head_sets for _, m, _ in s.members} | {
        id(c.module) for s in head_sets for c in s.consumers
    }
    for other in _sets(model):
        if not isinstance(other, AttentionHeadSet):
            assert not declared & ({id(m) for _, m, _ in other.members} | {id(c.module) for c in other.consumers})
    assert not adasparse.is_sparsified(model.embed) and not adasparse.is_sparsified(attn.out_proj)


@pytest.mark.parametrize("kind", ["user", "bert"])
def test_pruned_heads_output_zeros_and_the_threshold_learns_from_their_values(kind: str) -> None:
    model, x, _ = _sparsified(kind)
    head_set = _head_sets(model)[0]
    keep = head_set.current_keep()
    assert 0 < int(keep.sum()) < 4
    query, value = head_set.members[0][1], head_set.value
    rows = value.weight.detach().reshape(4, 8, -1)
    assert bool((rows[~keep] == 0).all()) and bool((value.bias.detach().reshape(4, 8)[~keep] == 0).all())
    assert bool((query.weight.detach().reshape(4, 8, -1)[~keep] != 0).any())  # queries: untouched until fixed
    model.train()
    model(x).sum().backward()
    assert float(query.weight_threshold.grad) != 0.0
    gradient = value.weight_orig.grad.reshape(4, 8, -1)
    assert float(gradient[~keep].abs().sum()) == 0.0 and float(gradient[keep].abs().sum()) > 0.0


@pytest.mark.parametrize("kind", ["user", "bert"])
def test_fixed_and_baked_heads_are_zero_in_every_layer_and_outputs_stay(kind: str) -> None:
    model, x, _ = _sparsified(kind)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    head_set = _head_sets(model)[0]
    keep = head_set.current_keep()
    leader = head_set.members[0][1]
    freeze(leader, "weight")
    assert all(s.frozen for s in _sets(model))
    for _, layer, tensor in head_set.members:
        assert bool((getattr(layer, tensor).detach().reshape(4, 8, -1)[~keep] == 0).all())
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)
    output = head_set.consumers[0].module
    adasparse.desparsify(model)
    assert bool((output.weight.reshape(-1, 4, 8)[:, ~keep] == 0).all())
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["user", "bert"])
def test_shrink_slices_the_heads_out_and_computes_the_same(kind: str) -> None:
    model, x, heads = _sparsified(kind)
    kept = [int(s.current_keep().sum()) for s in _head_sets(model)]
    assert min(kept) < 4
    model.eval()
    with torch.no_grad():
        expected = model(x)
    smaller = adasparse.shrink(model, x, heads=heads)
    assert not adasparse.pruned_tensors(smaller)
    if kind == "user":
        attentions = [block.attn for block in smaller.blocks]
        counts = [
            (a.num_heads, a.q_proj.out_features, a.out_proj.in_features, a.head_scale.numel()) for a in attentions
        ]
    else:
        attentions = [layer.attention for layer in smaller.bert.encoder.layer]
        counts = [
            (a.self.num_attention_heads, a.self.all_head_size, a.self.value.out_features, a.output.dense.in_features)
            for a in attentions
        ]
    assert counts == [(n, 8 * n, 8 * n, n if kind == "user" else 8 * n) for n in kept]
    with torch.no_grad():
        assert torch.allclose(smaller(x), expected, atol=1e-5, rtol=1e-4)
    buffer = io.BytesIO()
    torch.save(smaller.state_dict(), buffer)
    buffer.seek(0)
    again = adasparse.shrink(model, x, heads=heads)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    buffer = io.BytesIO()
    torch.save(again, buffer)
    buffer.seek(0)
    with torch.no_grad():
        assert torch.equal(torch.load(buffer, weights_only=False)(x), smaller(x))


def test_a_hugging_face_model_as_it_comes() -> None:
    """BertForSequenceClassification (scaled dot-product attention, a ModelOutput) with the declaration of the
    docs."""
    _, _, heads = _bert()
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 50, (3, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(
            model, init_threshold=1.0, min_params=100, granularity="channel", example_input=ids, heads=heads
        )
    kept = [int(s.current_keep().sum()) for s in _head_sets(model)]
    assert min(kept) < 4
    with torch.no_grad():
        expected = model(ids).logits
    smaller = adasparse.shrink(model, ids, heads=heads)
    assert [layer.attention.self.num_attention_heads for layer in smaller.bert.encoder.layer] == kept
    with torch.no_grad():
        assert torch.allclose(smaller(ids).logits, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["user", "bert"])
@pytest.mark.parametrize("keeps", [None, [[1, 0, 1, 0], [0, 0, 1, 0]], [[1, 1, 1, 1], [0, 1, 1, 1]]])
def test_predicted_cost_is_the_shrunk_models(kind: str, keeps: list | None) -> None:
    model, x, heads = MODELS[kind](0)
    dense = layer_macs(model, x, min_params=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(
            model, init_threshold=1.0, min_params=100, granularity="channel", example_input=x, heads=heads
        )
    for head_set, keep in zip(_head_sets(model), keeps or []):
        head_set.fix(torch.tensor(keep, dtype=torch.bool))
    cost = _head_sets(model)[0].cost
    fractions = cost.fractions()
    assert any(f > 0 for f, s in zip(fractions, cost.channel_sets) if isinstance(s, AttentionHeadSet))
    smaller = adasparse.shrink(model, x, heads=heads)
    macs = sum(layer_macs(smaller, x, min_params=0).values())
    assert cost.sparsity(fractions, "flops") == pytest.approx(1.0 - macs / sum(dense.values()), abs=1e-9)
    dense_count = sum(layer.params for layer in cost.layers)
    small_count = sum(p.numel() for name, p in smaller.named_parameters() if name in dense)
    assert cost.sparsity(fractions, "params") == pytest.approx(1.0 - small_count / dense_count, abs=1e-9)


def test_copies_of_a_sparsified_model_compute_the_same() -> None:
    model, x, _ = _sparsified("user")
    model.eval()
    with torch.no_grad():
        expected = model(x)
        twin = copy.deepcopy(model)
        assert torch.equal(twin(x), expected)
        assert _head_sets(twin)[0].value is twin.blocks[0].attn.v_proj
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
        fresh, _, _ = _sparsified("user", r=0.3, seed=5)
        fresh.load_state_dict(model.state_dict())
        fresh.eval()
        assert torch.equal(fresh(x), expected)


def test_shrink_of_a_model_with_declared_heads_needs_the_declaration() -> None:
    model, x, _ = _sparsified("user")
    with pytest.raises(ValueError, match="pass shrink the heads= given to sparsify"):
        adasparse.shrink(model, x)


def _declaration(**changes: Any) -> dict:
    fields = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "output": "out_proj", "num_heads": 4}
    fields.update(changes)
    return {Attention: AttentionHeads(**fields)}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"query": ""}, r"AttentionHeads\.query must name a Linear submodule"),
        ({"key": "q_proj"}, "four different layers"),
        ({"num_heads": 1}, r"AttentionHeads\.num_heads must be an integer >= 2"),
        ({"num_heads": 2.0}, r"AttentionHeads\.num_heads must be an integer >= 2 or the name of the attribute"),
        ({"inner_dim": 3}, r"AttentionHeads\.inner_dim must be None or the name of an attribute"),
        ({"on_shrink": "slice"}, r"AttentionHeads\.on_shrink must be None or a function"),
    ],
)
def test_a_bad_declaration_names_the_field(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _declaration(**changes)


def _narrow_key(model: nn.Module) -> None:
    model.blocks[0].attn.k_proj = nn.Linear(32, 16)


def _wider_output(model: nn.Module) -> None:
    model.blocks[0].attn.out_proj = nn.Linear(48, 32)


@pytest.mark.parametrize(
    ("heads", "edit", "match"),
    [
        (_declaration(query="q"), None, r"query='q' names no submodule of blocks\.0\.attn; .*'q_proj', 'k_proj'"),
        (_declaration(query="head_scale"), None, "names no submodule"),
        (_declaration(num_heads=3), None, r"out_features 32 of query, key and value is not divisible by num_heads=3"),
        (_declaration(num_heads="heads"), None, r"num_heads='heads': blocks\.0\.attn has no integer attribute"),
        (_declaration(num_heads="head_dim"), None, None),  # 8 heads of 4 are valid
        (_declaration(inner_dim="head_dim"), None, r"inner_dim='head_dim' of blocks\.0\.attn holds 8, not"),
        (_declaration(), _narrow_key, r"same out_features .*'key': 16.*grouped-query attention is not supported"),
        (_declaration(), _wider_output, r"output 'out_proj' reads 48 features, the value projection writes 32"),
        ({"blocks.*.mlp": _declaration()[Attention]}, None, r"the selector 'blocks\.\*\.mlp' matches no module"),
        ({nn.Linear: _declaration()[Attention]}, None, "names no submodule"),
        ({"blocks.0.attn": _declaration()[Attention], Attention: _declaration()[Attention]}, None, "matched by"),
        ({Attention: AttentionHeads("q_proj", "k_proj", "v_proj", "out_proj", num_heads=1 + 1)}, None, None),
    ],
)
def test_a_declaration_that_does_not_fit_its_module_is_refused(heads: dict, edit: Any, match: str | None) -> None:
    model, x, _ = _user()
    if edit is not None:
        edit(model)
    if match is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adasparse.sparsify(model, init_threshold=1.0, granularity="channel", example_input=x, heads=heads)
        return
    with pytest.raises(ValueError, match=match):
        adasparse.sparsify(model, init_threshold=1.0, granularity="channel", example_input=x, heads=heads)
    assert not adasparse.pruned_tensors(model)


def test_heads_need_the_channel_granularity_and_their_projections() -> None:
    model, x, heads = _user()
    with pytest.raises(ValueError, match="heads= declares attention heads for granularity='channel'"):
        adasparse.sparsify(model, init_threshold=1.0, heads=heads)
    with pytest.raises(ValueError, match=r"value projection blocks\.0\.attn\.v_proj of blocks\.0\.attn is excluded"):
        adasparse.sparsify(
            model, init_threshold=1.0, granularity="channel", example_input=x, heads=heads, exclude="*.v_proj"
        )
    with pytest.raises(TypeError, match="heads must be a dict"):
        adasparse.sparsify(model, init_threshold=1.0, granularity="channel", example_input=x, heads=[heads])
    assert not adasparse.pruned_tensors(model)
