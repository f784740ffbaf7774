"""WideResNet: structure, parameter count, initialisation, and a few training steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models.wide_resnet import BasicBlock, WideResNet

WRN_16_8_CIFAR100_PARAMS = 11_012_036


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(depth: int, k: int, num_classes: int, in_channels: int = 3) -> int:
    """The parameter count from the architecture, written out by hand."""

    def conv(cin: int, cout: int, size: int) -> int:
        return cin * cout * size * size + cout

    def block(cin: int, cout: int) -> int:
        shortcut = conv(cin, cout, 1) if cin != cout else 0
        return 2 * cin + conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + shortcut

    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = conv(in_channels, 16, 3)
    for cin, cout in zip(widths, widths[1:]):
        total += block(cin, cout) + (n - 1) * block(cout, cout)
    return total + 2 * widths[-1] + widths[-1] * num_classes + num_classes


def test_wrn_16_8_parameter_count() -> None:
    model = WideResNet(16, 8, num_classes=100)
    count = _count(model)
    assert count == WRN_16_8_CIFAR100_PARAMS
    assert count == _expected_count(16, 8, 100)
    assert 10_900_000 < count < 11_100_000
    assert f"{WRN_16_8_CIFAR100_PARAMS:,}" in (WideResNet.__doc__ or "")


@pytest.mark.parametrize(("depth", "k", "classes", "cin"), [(10, 1, 10, 3), (22, 2, 7, 1), (28, 10, 100, 3)])
def test_parameter_count_matches_formula(depth: int, k: int, classes: int, cin: int) -> None:
    model = WideResNet(depth, k, num_classes=classes, in_channels=cin)
    assert _count(model) == _expected_count(depth, k, classes, cin)


def test_wrn_16_8_forward() -> None:
    model = WideResNet(16, 8, num_classes=100).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    assert torch.isfinite(out).all()


def test_depth_16_structure() -> None:
    model = WideResNet(16, 2, num_classes=10)
    groups = [model.block1, model.block2, model.block3]
    assert [len(g) for g in groups] == [2, 2, 2]
    assert all(isinstance(b, BasicBlock) for g in groups for b in g)
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 16
    assert model.conv1.kernel_size == (3, 3)
    widths = [(b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride) for g in groups for b in g]
    assert widths == [
        (16, 32, (1, 1)),
        (32, 32, (1, 1)),
        (32, 64, (2, 2)),
        (64, 64, (1, 1)),
        (64, 128, (2, 2)),
        (128, 128, (1, 1)),
    ]
    for group in groups:
        first, rest = group[0], list(group)[1:]
        assert isinstance(first.shortcut, nn.Conv2d)
        assert first.shortcut.kernel_size == (1, 1)
        assert first.shortcut.stride == first.conv1.stride
        assert all(b.shortcut is None for b in rest)
    assert model.fc.in_features == 128 and model.fc.out_features == 10


def test_identity_shortcut_in_first_group_when_widths_match() -> None:
    model = WideResNet(10, 1, num_classes=10)
    assert model.block1[0].shortcut is None
    assert isinstance(model.block2[0].shortcut, nn.Conv2d)
    assert isinstance(model.block3[0].shortcut, nn.Conv2d)


def test_all_convs_have_bias_and_init() -> None:
    model = WideResNet(16, 2, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 2 * 2 + 3
    assert all(c.bias is not None for c in convs)
    assert all(torch.all(c.bias == 0) for c in convs)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert torch.all(model.fc.bias == 0)
    big = model.block3[1].conv2
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)


def test_in_channels_and_other_sizes() -> None:
    model = WideResNet(10, 1, num_classes=4, in_channels=1)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 4)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 4)


def test_dropout_is_used_only_when_requested() -> None:
    assert not any(isinstance(m, nn.Dropout) for m in WideResNet(10, 1).modules())
    with_dropout = [m for m in WideResNet(10, 1, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert len(with_dropout) == 3 and all(m.p == 0.3 for m in with_dropout)


@pytest.mark.parametrize("depth", [4, 8, 12, 15, 17, 0, -2])
def test_bad_depth_raises(depth: int) -> None:
    with pytest.raises(ValueError, match=f"depth={depth}"):
        WideResNet(depth, 1)


def test_bad_dropout_and_width_raise() -> None:
    with pytest.raises(ValueError, match="dropout"):
        WideResNet(10, 1, dropout=1.0)
    with pytest.raises(ValueError, match="widen_factor"):
        WideResNet(10, 0)


def test_tiny_wrn_trains() -> None:
    model = WideResNet(10, 1, num_classes=5).train()
    x = torch.randn(8, 3, 8, 8)
    y = torch.randint(0, 5, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < losses[0]
