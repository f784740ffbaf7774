"""Structured granularities: parsing, R x C blocks, and output channels tied across layers."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.channel_sets import ChannelSet
from adasparse.core.granularity import BlockLayout, parse_granularity
from adasparse.core.sparsify import desparsify, sparsify

pytest.importorskip("torch_pruning")


class Residual(nn.Module):
    """Stem conv + BN, one residual block (two convs), pooled linear head: the stem and the block's second conv are
    tied by the addition."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, width, 3, padding=1)
        self.stem_bn = nn.BatchNorm1d(width)
        self.conv1 = nn.Conv1d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.head(x.mean(dim=-1))


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x + self.fc2(torch.relu(self.fc1(x)))))


def _channel_model(seed: int = 0, r: float = 1.0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = Residual()
    x = torch.randn(8, 1, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify(model, init_threshold=r, min_params=10, granularity="channel", example_input=x)
    return model, x


def _sets(model: nn.Module) -> list[ChannelSet]:
    return list({id(p.layout): p.layout for p in adasparse.pruned_tensors(model)}.values())


@pytest.mark.parametrize("text", ["element", "channel", "block:4x2", " Block:1x8 "])
def test_parse_accepts_the_documented_forms(text: str) -> None:
    parsed = parse_granularity(text)
    assert str(parsed) == text.strip().lower()


@pytest.mark.parametrize("text", ["elements", "block:0x4", "block:4", "block:axb", "", 3])
def test_parse_names_the_argument_and_the_forms(text: object) -> None:
    with pytest.raises(ValueError, match=r"granularity must be one of 'element', 'channel', 'block:RxC'"):
        parse_granularity(text)  # type: ignore[arg-type]


def test_blocks_that_do_not_tile_name_the_layer() -> None:
    model = nn.Sequential(nn.Linear(30, 50))
    with pytest.raises(ValueError, match=r"block:4x4 does not tile 0\.weight.*50x30"):
        sparsify(model, init_threshold=1.0, min_params=1, granularity="block:4x4")


def test_blocks_are_zero_or_kept_whole_and_keep_their_values() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    raw = layer.weight.detach().clone()
    sparsify(layer, init_threshold=1.0, min_params=1, granularity="block:4x8")
    effective = layer.weight.detach()
    blocks = effective.reshape(4, 4, 4, 8).permute(0, 2, 1, 3).reshape(16, 32)
    zero_blocks = (blocks == 0).all(dim=1)
    kept = (blocks != 0).all(dim=1)
    assert bool((zero_blocks | kept).all()) and 0 < int(zero_blocks.sum()) < 16
    assert torch.equal(effective[effective != 0], raw[effective != 0])


def test_block_threshold_gradient_is_the_pruned_residual_times_the_slope() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(16, 8)
    sparsify(layer, init_threshold=1.0, min_params=1, granularity="block:2x4")
    pruned = adasparse.pruned_tensors(layer)[0]
    x = torch.randn(5, 16)
    layer(x).pow(2).sum().backward()
    raw, r = pruned.raw.detach(), float(pruned.threshold.detach())
    layout = pruned.layout
    assert isinstance(layout, BlockLayout)
    scores = layout.scores(raw)
    rms = float(scores.double().pow(2).mean().sqrt())
    bound = r * rms + 1e-6
    weight_grad = pruned.raw.grad  # straight-through: the gradient for the effective weight
    residual = raw - pruned.effective()
    expected = -(rms / bound) * float((weight_grad * residual).sum())
    assert pruned.threshold.grad is not None
    assert float(pruned.threshold.grad) == pytest.approx(expected, rel=1e-5)


def test_element_granularity_adds_no_key() -> None:
    model = nn.Sequential(nn.Linear(40, 40))
    sparsify(model, target=0.5)
    assert not any(key.endswith("_layout") for key in model.state_dict())


def test_channel_sets_follow_the_residual_addition() -> None:
    model, _ = _channel_model()
    sets = {frozenset(s.names): s for s in _sets(model)}
    assert set(sets) == {frozenset({"conv1"}), frozenset({"conv2", "stem"})}
    tied = sets[frozenset({"conv2", "stem"})]
    assert sorted(c.name for c in tied.consumers) == ["conv1", "head"]
    assert sorted(name for name, _ in tied.companions) == ["bn2", "stem_bn"]
    # one shared threshold for the tied layers
    assert model.conv2.weight_threshold is model.stem.weight_threshold


def test_output_layer_stays_dense_with_a_warning_and_include_of_it_is_an_error() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 1, 20)
    with pytest.warns(UserWarning, match=r"leaves dense: head \(its outputs are the model's outputs\)"):
        sparsify(Residual(), init_threshold=1.0, min_params=10, granularity="channel", example_input=x)
    with pytest.raises(ValueError, match=r"cannot prune the output channels of head \(its outputs"):
        sparsify(Residual(), init_threshold=1.0, min_params=10, include="head", granularity="channel", example_input=x)


def test_channels_mixed_by_layernorm_stay_dense() -> None:
    model = WithLayerNorm()
    with pytest.warns(UserWarning, match=r"fc2 \(tied to norm \(LayerNorm mixes these channels\)\)"):
        sparsify(model, init_threshold=1.0, min_params=10, granularity="channel", example_input=torch.randn(2, 32))
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["fc1.weight"]


class SmallStem(nn.Module):
    """A first convolution of 1 * 16 * 3 = 48 weights read by one of 16 * 32 * 3 = 1536, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 16, 3, padding=1)
        self.conv = nn.Conv1d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(torch.relu(self.stem(x)))).mean(dim=-1))


def test_a_set_counts_the_weights_its_channels_reach() -> None:
    model, x = SmallStem(), torch.randn(2, 1, 12)
    sparsify(model, init_threshold=1.0, min_params=1, granularity="channel", example_input=x)
    reached = {tuple(s.names): s.weights_reached() for s in _sets(model)}
    # the stem's rows and the convolution's columns; the convolution's rows and the classifier's columns
    assert reached == {("stem",): 48 + 1536, ("conv",): 1536 + 320}


@pytest.mark.parametrize(
    ("min_params", "expected"),
    [(1000, ["stem", "conv"]), (1584, ["stem", "conv"]), (1585, ["conv"]), (1856, ["conv"]), (1857, [])],
)
def test_a_set_is_pruned_when_the_weights_it_reaches_are_min_params(min_params: int, expected: list[str]) -> None:
    """The stem (48 weights) is below every min_params here, yet removing its channels removes 1,584 weights; the
    convolution's reach 1,856 (its 1,536 and the classifier's 320)."""
    model, x = SmallStem(), torch.randn(2, 1, 12)
    if not expected:
        with pytest.raises(ValueError, match="no channel set reaching min_params=1857"):
            sparsify(model, init_threshold=1.0, min_params=min_params, granularity="channel", example_input=x)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparsify(model, init_threshold=1.0, min_params=min_params, granularity="channel", example_input=x)
    assert [s.names for s in _sets(model)] == [[name] for name in expected]  # in model order
    # the classifier is below min_params: left dense without a word, as element-wise pruning leaves it
    assert not [w for w in caught if "leaves dense" in str(w.message)]


def test_exclude_keeps_a_small_first_layer_dense() -> None:
    model, x = SmallStem(), torch.randn(2, 1, 12)
    sparsify(model, init_threshold=1.0, exclude="stem", granularity="channel", example_input=x)
    assert [s.names for s in _sets(model)] == [["conv"]]


def test_a_small_layer_leading_a_set_is_checked_for_non_finite_weights() -> None:
    model = SmallStem()
    with torch.no_grad():
        model.stem.weight[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"stem\.weight has non-finite values"):
        sparsify(model, init_threshold=1.0, granularity="channel", example_input=torch.randn(2, 1, 12))


def test_element_granularity_still_leaves_a_small_first_layer_dense() -> None:
    model = SmallStem()
    sparsify(model, target=0.5)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["conv.weight"]


def test_channel_granularity_needs_an_example_input() -> None:
    with pytest.raises(ValueError, match="needs example_input"):
        sparsify(Residual(), init_threshold=1.0, min_params=10, granularity="channel")


def test_pruned_channels_are_zero_where_read_and_only_the_threshold_learns_from_them() -> None:
    model, x = _channel_model()
    tied = next(s for s in _sets(model) if len(s.members) == 2)
    keep = tied.current_keep()
    assert 0 < int(keep.sum()) < tied.channels
    seen = {}
    model.conv1.register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0].detach()))
    model.train()
    model(x).sum().backward()
    assert bool((seen["input"][:, ~keep] == 0).all())
    # nothing reads the pruned channels: their rows get no gradient; the shared threshold gets the task's
    assert float(model.stem.weight_orig.grad[~keep].abs().sum()) == 0.0
    assert float(model.stem.weight_orig.grad[keep].abs().sum()) > 0.0
    assert float(model.stem.weight_threshold.grad) != 0.0


def test_desparsify_keeps_outputs_and_bakes_every_copy_of_the_zeros() -> None:
    model, x = _channel_model()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    tied = next(s for s in _sets(model) if len(s.members) == 2)
    keep = tied.current_keep()
    desparsify(model)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert not any(module._forward_pre_hooks for module in model.modules())
    assert bool((model.stem.weight[~keep] == 0).all()) and bool((model.conv1.weight[:, ~keep] == 0).all())
    assert bool((model.head.weight[:, ~keep] == 0).all()) and bool((model.stem_bn.weight[~keep] == 0).all())


def test_copies_and_state_dicts_compute_the_same() -> None:
    model, x = _channel_model()
    model.eval()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(copy.deepcopy(model)(x), expected)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
        fresh, _ = _channel_model(seed=5, r=0.3)
        fresh.load_state_dict(model.state_dict())
        fresh.eval()
        assert torch.equal(fresh(x), expected)


def test_freeze_fixes_every_set_in_one_decision() -> None:
    model, x = _channel_model()
    keeps = [s.current_keep().clone() for s in _sets(model)]
    first = adasparse.pruned_tensors(model)[0]
    adasparse.parametrization.freeze(first.module, first.tensor_name)
    assert all(s.frozen for s in _sets(model))
    assert all(torch.equal(s.current_keep(), keep) for s, keep in zip(_sets(model), keeps))


def test_a_channel_state_read_from_a_file_is_refused_with_a_reason() -> None:
    model, _ = _channel_model()
    with pytest.raises(ValueError, match="tied across layers"):
        adasparse.report.state_dict_report(model.state_dict(), min_params=10)
