"""The model registry: names, wrn-DEPTH-WIDTH parsing, errors, default models."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from adasparse.app import models
from adasparse.app.models import MODELS, create_model, default_model
from adasparse.app.models.cnn1d import CNN1d
from adasparse.app.models.cnn2d import CNN2d
from adasparse.app.models.convnext2d import ConvNeXt2d
from adasparse.app.models.mlp import MLP
from adasparse.app.models.mobilenet2d import MobileNet2d
from adasparse.app.models.resnet1d import ResNet1d
from adasparse.app.models.resnet2d import ResNet2d
from adasparse.app.models.transformer import Transformer1d
from adasparse.app.models.wide_resnet import WideResNet


def test_public_names() -> None:
    assert set(models.__all__) == {"create_model", "MODELS", "default_model", "check_model_name"}
    assert list(MODELS) == [
        "mlp",
        "cnn1d",
        "cnn2d",
        "wrn-16-8",
        "resnet1d",
        "resnet2d",
        "transformer",
        "mobilenet2d",
        "convnext2d",
    ]


SMALL_MODELS = [
    ("mlp", MLP, (1, 40)),
    ("cnn1d", CNN1d, (1, 40)),
    ("cnn2d", CNN2d, (1, 8, 8)),
    ("resnet1d", ResNet1d, (1, 40)),
    ("resnet2d", ResNet2d, (1, 8, 8)),
    ("transformer", Transformer1d, (1, 40)),
    ("mobilenet2d", MobileNet2d, (1, 8, 8)),
    ("convnext2d", ConvNeXt2d, (1, 8, 8)),
]
"""Each small registered model, its class and an input shape it takes."""


@pytest.mark.parametrize(("name", "kind", "input_shape"), SMALL_MODELS)
def test_small_models_round_trip(name: str, kind: type, input_shape: tuple[int, ...]) -> None:
    model = create_model(name, num_classes=6, input_shape=input_shape)
    assert type(model) is kind
    assert model(torch.randn(3, *input_shape)).shape == (3, 6)
    direct = MODELS[name](num_classes=6, input_shape=input_shape)
    assert type(direct) is kind


@pytest.mark.parametrize(("name", "input_shape"), [(name, shape) for name, _, shape in SMALL_MODELS])
def test_small_models_train_and_evaluate(name: str, input_shape: tuple[int, ...]) -> None:
    """Every parameter gets a gradient in training; evaluation is deterministic."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, input_shape=input_shape)
    x = torch.randn(8, *input_shape)
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_registered_wrn_16_8() -> None:
    model = create_model("wrn-16-8", num_classes=100, input_shape=(3, 32, 32))
    assert isinstance(model, WideResNet)
    assert (model.depth, model.widen_factor) == (16, 8)
    assert model.fc.out_features == 100


@pytest.mark.parametrize(("name", "depth", "k"), [("wrn-10-1", 10, 1), ("wrn-22-2", 22, 2)])
def test_any_wrn_name_parses(name: str, depth: int, k: int) -> None:
    model = create_model(name, num_classes=4, input_shape=(1, 8, 8))
    assert isinstance(model, WideResNet)
    assert (model.depth, model.widen_factor) == (depth, k)
    assert model.conv1.in_channels == 1
    assert model.fc.out_features == 4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_wrn_28_10_parses_without_running() -> None:
    model = create_model("wrn-28-10", num_classes=10, input_shape=(3, 32, 32))
    assert (model.depth, model.widen_factor) == (28, 10)
    assert len(model.block1) == 4


def test_wrn_bad_depth_from_name_raises() -> None:
    with pytest.raises(ValueError, match="depth=12"):
        create_model("wrn-12-2", num_classes=10, input_shape=(3, 32, 32))


@pytest.mark.parametrize(
    "name", ["x", "resnet18", "resnet", "Transformer", "wrn-16", "wrn-16-8-1", "WRN-16-8", " mlp", "wrn-a-b", ""]
)
def test_unknown_name_raises_with_choices(name: str) -> None:
    expected = (
        f"unknown model {name!r}; choose one of mlp, cnn1d, cnn2d, wrn-16-8, resnet1d, resnet2d, transformer, "
        "mobilenet2d, convnext2d (or wrn-DEPTH-WIDTH)"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        create_model(name, num_classes=10, input_shape=(1, 40))


def test_create_model_returns_modules_in_train_mode() -> None:
    for name, shape in [
        ("mlp", (4,)),
        ("cnn1d", (1, 40)),
        ("cnn2d", (1, 8, 8)),
        ("wrn-10-1", (3, 8, 8)),
        ("resnet1d", (1, 40)),
        ("resnet2d", (1, 8, 8)),
        ("transformer", (1, 40)),
        ("mobilenet2d", (1, 8, 8)),
    ]:
        model = create_model(name, num_classes=2, input_shape=shape)
        assert isinstance(model, nn.Module) and model.training


@pytest.mark.parametrize(
    ("dataset", "name"),
    [("mnist1d", "cnn1d"), ("digits", "cnn2d"), ("cifar10", "wrn-16-8"), ("cifar100", "wrn-16-8")],
)
def test_default_model(dataset: str, name: str) -> None:
    assert default_model(dataset) == name
    assert default_model(dataset) in MODELS


@pytest.mark.parametrize("dataset", ["mnist", "imagenet", "CIFAR10", ""])
def test_default_model_unknown_dataset_raises(dataset: str) -> None:
    with pytest.raises(ValueError, match="mnist1d"):
        default_model(dataset)


def test_check_model_name() -> None:
    assert models.check_model_name("wrn-28-10") == "wrn-28-10"
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.check_model_name("vgg")
