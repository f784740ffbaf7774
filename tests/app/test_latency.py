"""Side-by-side latency, the one-channel floor of channel pruning and BatchNorm folding (no absolute timing is
asserted)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from adasparse.app.latency import (
    OnnxRuntimeModel,
    fold_batchnorm,
    latency_medians,
    latency_ratio,
    one_channel_model,
    onnxruntime_medians,
)
from adasparse.app.models import create_model
from adasparse.core.channel_sets import ChannelSet, HeadSet
from adasparse.core.flops import layer_macs
from adasparse.core.granularity import channel_dim
from adasparse.core.parametrization import pruned_tensors
from adasparse.core.sparsify import sparsify


def test_every_model_gets_its_median_and_is_left_as_it_was() -> None:
    models = [nn.Linear(8, 4), nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), nn.Linear(8, 2)]
    models[1].eval()
    threads = torch.get_num_threads()
    medians = latency_medians(models, torch.randn(1, 8), 4, rounds=5, warmup=1)
    assert len(medians) == 3 and all(m > 0 for m in medians)
    assert [m.training for m in models] == [True, False, True]
    assert torch.get_num_threads() == threads


def test_the_ratio_is_the_candidate_over_the_reference() -> None:
    result = latency_ratio(nn.Linear(8, 4), nn.Linear(8, 4), torch.randn(8), 2, rounds=3, warmup=0)
    assert result.batch == 2
    assert result.ratio == pytest.approx(result.candidate / result.reference)


def test_no_models_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        latency_medians([], torch.randn(1, 8), 1)


def _sets(model: nn.Module, x: torch.Tensor, min_params: int) -> list[ChannelSet]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify(
            model,
            init_threshold=0.0,
            trainable=False,
            min_params=min_params,
            granularity="channel",
            example_input=x,
        )
    return list({id(p.layout): p.layout for p in pruned_tensors(model) if isinstance(p.layout, ChannelSet)}.values())


@pytest.mark.parametrize(
    ("name", "shape"), [("cnn2d", (1, 8, 8)), ("resnet1d", (1, 40)), ("transformer", (1, 40)), ("mlp", (40,))]
)
def test_every_prunable_set_keeps_one_channel(name: str, shape: tuple[int, ...]) -> None:
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape)
    x = torch.randn(4, *shape)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    floor = one_channel_model(model, x, min_params=100)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())  # not modified
    assert not pruned_tensors(floor)
    sets = _sets(create_model(name, num_classes=10, input_shape=shape), x, 100)
    assert sets
    for channel_set in sets:
        for member, _, _ in channel_set.members:
            shrunk = floor.get_submodule(member)
            if isinstance(channel_set, HeadSet):
                assert shrunk.num_heads == 1
            else:
                assert shrunk.weight.shape[channel_dim(shrunk)] == 1, member
    with torch.no_grad():
        assert floor(x).shape == model(x).shape
    assert sum(layer_macs(floor, x, min_params=0).values()) < 0.2 * sum(layer_macs(model, x, min_params=0).values())


def test_a_sparsified_model_is_refused() -> None:
    pytest.importorskip("torch_pruning")
    model = create_model("mlp", num_classes=10, input_shape=(40,))
    x = torch.randn(4, 40)
    _sets(model, x, 100)
    with pytest.raises(ValueError, match="plain model"):
        one_channel_model(model, x)


def _norms(model: nn.Module) -> int:
    return sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def _with_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The model with BatchNorm statistics and affines away from their defaults, in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cnn2d", (1, 8, 8)),
        ("resnet1d", (1, 40)),
        ("resnet2d", (1, 8, 8)),
        ("wrn-16-2", (3, 8, 8)),
        ("mobilenet2d", (1, 8, 8)),
    ],
)
def test_the_folded_model_computes_the_same_outputs(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(6, *shape)
    model = _with_statistics(create_model(name, num_classes=10, input_shape=shape), x)
    with torch.no_grad():
        expected = model(x)
    folded = fold_batchnorm(model, x)
    assert type(folded) is type(model)
    assert not folded.training
    with torch.no_grad():
        assert torch.allclose(folded(x), expected, atol=1e-5, rtol=1e-4)
        assert torch.equal(model(x), expected)  # the original is not changed
    if name == "wrn-16-2":
        assert _norms(folded) < _norms(model)  # pre-activation: a norm after an addition or the input stays
    else:
        assert _norms(model) > 0 and _norms(folded) == 0


class _ReadTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


class _Tokens(nn.Module):
    """A Linear over the last dimension, then a BatchNorm1d over dimension 1 (the tokens, not the features)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 5)
        self.norm = nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


@pytest.mark.parametrize(
    ("make", "x"),
    [
        (_ReadTwice, torch.randn(4, 3, 10)),
        (_Tokens, torch.randn(4, 5, 8)),
        (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4, track_running_stats=False)), torch.randn(4, 3, 9)),
        (lambda: nn.Sequential(nn.ConvTranspose1d(4, 4, 3, groups=2), nn.BatchNorm1d(4)), torch.randn(4, 4, 9)),
    ],
    ids=["output-read-twice", "norm-over-tokens", "batch-statistics", "grouped-transposed"],
)
def test_a_norm_that_cannot_be_folded_stays(make, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _with_statistics(make(), x)
    folded = fold_batchnorm(model, x)
    assert _norms(folded) == 1
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-6)


@pytest.mark.parametrize(
    ("layers", "x"),
    [
        ((nn.Linear(6, 4), nn.BatchNorm1d(4)), torch.randn(5, 6)),
        ((nn.ConvTranspose2d(3, 4, 3, stride=2), nn.BatchNorm2d(4)), torch.randn(2, 3, 5, 5)),
        ((nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4)), torch.randn(2, 2, 5, 5, 5)),
    ],
    ids=["linear", "conv-transpose", "conv3d"],
)
def test_linear_and_transposed_layers_fold_too(layers: tuple[nn.Module, ...], x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _with_statistics(nn.Sequential(*layers, nn.ReLU()), x)
    folded = fold_batchnorm(model, x)
    assert _norms(folded) == 0
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5, rtol=1e-4)


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
            return self.norm(self.conv(x))
        return self.conv(x)


def test_a_model_without_batchnorm_is_an_eval_copy_and_an_untraceable_one_an_error() -> None:
    x = torch.randn(2, 40)
    model = create_model("mlp", num_classes=10, input_shape=(40,))
    folded = fold_batchnorm(model, x)
    assert folded is not model and not folded.training and model.training
    with pytest.raises(ValueError, match="torch.fx"):
        fold_batchnorm(_Branching(), torch.randn(2, 3, 9))


def test_a_fold_that_changes_the_outputs_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import adasparse.app.latency as latency

    x = torch.randn(4, 3, 9)
    model = _with_statistics(nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), x)
    monkeypatch.setattr(latency, "fuse_conv_bn_eval", lambda conv, norm, transpose=False: conv)
    with pytest.raises(RuntimeError, match="differ"):
        fold_batchnorm(model, x)


def test_the_floor_of_declared_attention_keeps_one_head() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("torch_pruning")
    from ..zoo import BertClassifier, bert_heads

    torch.manual_seed(0)
    model = BertClassifier().eval()
    ids = torch.randint(0, 50, (3, 6))
    floor = one_channel_model(model, ids, min_params=100, heads=bert_heads())
    for layer in floor.bert.encoder.layer:
        assert layer.attention.self.num_attention_heads == 1 and layer.attention.self.query.out_features == 8
        assert layer.intermediate.dense.out_features == 1
    with torch.no_grad():
        assert floor(ids).shape == model(ids).shape


def test_onnx_runtime_times_each_exported_model_in_its_place() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    small = nn.Linear(8, 4)
    large = nn.Sequential(nn.Linear(8, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))
    medians = onnxruntime_medians([large, small], torch.randn(1, 8), 64, rounds=5, warmup=1)
    assert len(medians) == 2 and all(m > 0 for m in medians)
    wrapped = OnnxRuntimeModel(large, torch.randn(1, 8))
    for batch in (1, 7):  # the batch stays dynamic
        x = torch.randn(batch, 8)
        with torch.no_grad():
            assert torch.allclose(wrapped(x), large(x), atol=1e-5)
    assert medians[0] > 5 * medians[1]  # a hundred times the arithmetic: the order is the models'


@pytest.mark.parametrize(("models", "threads", "match"), [([], 1, "at least one model"), (None, 0, "threads")])
def test_onnx_runtime_timing_refuses_bad_arguments(models: list | None, threads: int, match: str) -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match=match):
        onnxruntime_medians([nn.Linear(4, 2)] if models is None else models, torch.randn(1, 4), 2, threads=threads)
