"""Layer selection: default kinds, include/exclude by name, glob, type and predicate."""

from __future__ import annotations

import pytest
from torch import nn

import adasparse
from adasparse.core.selection import select_layers

from ..zoo import Affine


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4)
        self.fc = nn.Linear(32, 64)
        self.norm = nn.LayerNorm(64)
        self.extra = Affine(64, 40)


def _model() -> nn.Module:
    return nn.ModuleDict(
        {"stem": nn.Conv2d(3, 64, 3), "blocks": nn.ModuleList([Block(), Block()]), "head": nn.Linear(64, 100)}
    )


def _names(model: nn.Module, **kwargs: object) -> list[str]:
    return [f"{s.name}:{','.join(s.tensor_names)}" for s in select_layers(model, **kwargs)]


def test_default_selection() -> None:
    assert _names(_model()) == [
        "stem:weight",
        "blocks.0.attn:in_proj_weight",
        "blocks.0.attn.out_proj:weight",
        "blocks.0.fc:weight",
        "blocks.1.attn:in_proj_weight",
        "blocks.1.attn.out_proj:weight",
        "blocks.1.fc:weight",
        "head:weight",
    ]


def test_include_by_type_name_glob_and_predicate() -> None:
    by_type = _names(_model(), include=Affine)
    assert "blocks.0.extra:weight" in by_type and "blocks.1.extra:weight" in by_type
    assert _names(_model(), include="blocks.0.extra") == _names(_model(), include=lambda m, n: n == "blocks.0.extra")
    by_glob = _names(_model(), include="blocks.*.extra")
    assert by_glob == by_type


def test_exclude_by_name_glob_type_and_predicate() -> None:
    assert "stem:weight" not in _names(_model(), exclude="stem")
    no_attn = _names(_model(), exclude="blocks.*.attn*")
    assert not any("attn" in n for n in no_attn)
    assert _names(_model(), exclude=nn.MultiheadAttention) == [
        "stem:weight",
        "blocks.0.attn.out_proj:weight",
        "blocks.0.fc:weight",
        "blocks.1.attn.out_proj:weight",
        "blocks.1.fc:weight",
        "head:weight",
    ]
    assert _names(_model(), exclude=[lambda m, n: isinstance(m, nn.Linear), "stem"]) == [
        "blocks.0.attn:in_proj_weight",
        "blocks.1.attn:in_proj_weight",
    ]


def test_min_params_applies_to_each_tensor() -> None:
    assert _names(_model(), min_params=2049) == [
        "blocks.0.attn:in_proj_weight",
        "blocks.1.attn:in_proj_weight",
        "head:weight",
    ]


def test_selection_errors() -> None:
    with pytest.raises(ValueError, match="include entry 'blocks.9' matches no module name"):
        select_layers(_model(), include="blocks.9")
    with pytest.raises(ValueError, match="exclude entry 'hed' matches no module name"):
        select_layers(_model(), exclude="hed")
    with pytest.raises(TypeError, match="has no 'weight' parameter"):
        select_layers(_model(), include=nn.ReLU if False else "blocks.0")
    with pytest.raises(TypeError, match="include must be"):
        select_layers(_model(), include=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="include entries must be"):
        select_layers(_model(), include=["stem", 3])  # type: ignore[list-item]


def test_tied_weights_are_pruned_once() -> None:
    first, second = nn.Linear(64, 64), nn.Linear(64, 64)
    second.weight = first.weight
    model = nn.Sequential(first, second)
    with pytest.warns(UserWarning, match="tied weights"):
        adasparse.sparsify(model, target=0.5)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["0.weight"]


def test_selection_matches_sparsify() -> None:
    model = _model()
    expected = _names(model, include=Affine, exclude="head")
    adasparse.sparsify(model, target=0.5, include=Affine, exclude="head")
    got = {}
    for pruned in adasparse.pruned_tensors(model):
        got.setdefault(pruned.module_name, []).append(pruned.tensor_name)
    assert [f"{k}:{','.join(v)}" for k, v in got.items()] == expected
