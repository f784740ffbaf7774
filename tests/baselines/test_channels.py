"""L1-norm channel pruning: torch-pruning's ranking, the budget met on the shared cost model."""

from __future__ import annotations

import pytest
import torch

import adasparse
from adasparse.app.models import create_model
from adasparse.baselines.channels import magnitude_channel_prune
from adasparse.core.coupling import dependency_graph
from adasparse.core.flops import layer_macs

torch_pruning = pytest.importorskip("torch_pruning")


@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize(("name", "shape"), [("cnn2d", (1, 8, 8)), ("resnet2d", (1, 8, 8)), ("mobilenet2d", (1, 8, 8))])
def test_the_budget_is_met_within_a_channel(allocation: str, name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape)
    x = torch.randn(2, *shape)
    dense = sum(layer_macs(model, x, min_params=0).values())
    reached = magnitude_channel_prune(model, x, 0.5, allocation=allocation, min_params=100)
    smaller = adasparse.shrink(model, x)
    assert 1.0 - sum(layer_macs(smaller, x, min_params=0).values()) / dense == pytest.approx(reached, abs=1e-9)
    assert reached == pytest.approx(0.5, abs=0.03)


def _first_layer_l1(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torch-pruning's L1 importance of the first convolution's output channels (over their dependency group)."""
    graph = dependency_graph(model, x)
    first = model.features[0]
    group = graph.get_pruning_group(first, torch_pruning.prune_conv_out_channels, idxs=list(range(first.out_channels)))
    return torch_pruning.importance.MagnitudeImportance(p=1)(group)


def test_uniform_prunes_the_same_fraction_and_the_smallest_l1_channels() -> None:
    torch.manual_seed(0)
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    expected = _first_layer_l1(model, x)
    magnitude_channel_prune(model, x, 0.4, allocation="uniform", min_params=100)
    channel_set = next(p.layout for p in adasparse.pruned_tensors(model) if p.name == "features.0.weight")
    pruned = (~channel_set.current_keep()).nonzero().flatten()
    count = len(pruned)
    assert set(pruned.tolist()) == set(torch.argsort(expected, stable=True)[:count].tolist())
    fractions = [1 - float(s.current_keep().float().mean()) for s in channel_set.cost.channel_sets]
    assert max(fractions) - min(fractions) < 0.05


def test_bad_arguments_name_themselves() -> None:
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match="allocation"):
        magnitude_channel_prune(model, x, 0.5, allocation="random")
    with pytest.raises(ValueError, match="budget"):
        magnitude_channel_prune(model, x, 0.5, budget="latency")
    with pytest.raises(ValueError, match="target"):
        magnitude_channel_prune(model, x, 1.5)


@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_channel_multiple_rounds_the_kept_channels(allocation: str) -> None:
    torch.manual_seed(0)
    model = create_model("resnet2d", num_classes=10, input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    reached = magnitude_channel_prune(model, x, 0.5, allocation=allocation, min_params=100, channel_multiple=8)
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    for channel_set in cost.channel_sets:
        kept = int(channel_set.current_keep().sum())
        assert kept % 8 == 0 or kept == channel_set.channels or channel_set.channels <= 8
    assert abs(reached - 0.5) <= 8 * cost.channel_cost(cost.fractions(), "flops")


def test_given_counts_keep_the_largest_l1_channels_of_each_set() -> None:
    torch.manual_seed(0)
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    expected = _first_layer_l1(model, x)
    dense = sum(layer_macs(model, x, min_params=0).values())
    reached = magnitude_channel_prune(model, x, 0.0, allocation=[5, 20, 40], min_params=100)
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    assert [int(s.current_keep().sum()) for s in cost.channel_sets] == [5, 20, 40]
    first_set = next(p.layout for p in adasparse.pruned_tensors(model) if p.name == "features.0.weight")
    assert set(first_set.current_keep().nonzero().flatten().tolist()) == set(
        torch.argsort(expected, descending=True, stable=True)[:5].tolist()
    )
    smaller = adasparse.shrink(model, x)
    assert 1.0 - sum(layer_macs(smaller, x, min_params=0).values()) / dense == pytest.approx(reached, abs=1e-9)


@pytest.mark.parametrize(
    ("counts", "multiple", "message"),
    [
        ([5, 20], 1, "gives 2 kept counts, the model has 3 channel sets"),
        ([5, 0, 40], 1, r"keeps an integer in \[1, "),
        ([8, 16, 40], 8, "channel_multiple=8 rounds the counts this function chooses"),
    ],
)
def test_bad_given_counts_leave_the_model_as_it_was(counts: list[int], multiple: int, message: str) -> None:
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        magnitude_channel_prune(
            model, torch.randn(2, 1, 8, 8), 0.5, allocation=counts, min_params=100, channel_multiple=multiple
        )
    assert not adasparse.pruned_tensors(model)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


def test_declared_heads_are_ranked_by_their_l1_norm_with_the_channels() -> None:
    pytest.importorskip("transformers")
    from ..zoo import BertClassifier, bert_heads

    torch.manual_seed(0)
    model = BertClassifier().eval()
    ids = torch.randint(0, 50, (3, 6))
    attention = model.bert.encoder.layer[0].attention
    with torch.no_grad():  # head 2 of the first layer: the smallest rows and columns by far
        for layer in (attention.self.query, attention.self.key, attention.self.value):
            layer.weight[16:24] *= 0.01
        attention.output.dense.weight[:, 16:24] *= 0.01
    dense = sum(layer_macs(model, ids, min_params=0).values())
    reached = magnitude_channel_prune(model, ids, 0.5, allocation="uniform", min_params=100, heads=bert_heads())
    smaller = adasparse.shrink(model, ids, heads=bert_heads())
    kept_heads = [layer.attention.self.num_attention_heads for layer in smaller.bert.encoder.layer]
    assert kept_heads == [2, 2]
    first = next(p.layout for p in adasparse.pruned_tensors(model) if p.layout.kind == "head")
    assert first.module_name == "bert.encoder.layer.0.attention"
    assert not first.current_keep()[2]
    assert 1.0 - sum(layer_macs(smaller, ids, min_params=0).values()) / dense == pytest.approx(reached, abs=1e-9)
