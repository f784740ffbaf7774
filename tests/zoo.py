"""A zoo of every prunable module kind, with inputs to run them on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from adasparse import AttentionHeads


class ScaledLinear(nn.Linear):
    """A user subclass of Linear with its own forward that reads self.weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * 0.5, self.bias)


class Affine(nn.Module):
    """A user module of an unknown kind with a `weight` parameter (selected only through `include`)."""

    def __init__(self, features: int = 48, out: int = 40) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, features) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


@dataclass
class ZooEntry:
    name: str
    make: Callable[[], nn.Module]
    inputs: Callable[[], tuple]
    tensor_names: tuple[str, ...] = ("weight",)
    include: object = None


def _mha_inputs(batch_first: bool, e: int = 32, kdim: int = 32, vdim: int = 32) -> Callable[[], tuple]:
    def make() -> tuple:
        shape = (3, 5) if batch_first else (5, 3)
        q = torch.randn(*shape, e)
        k = torch.randn(*shape, kdim)
        v = torch.randn(*shape, vdim)
        return (q, k, v)

    return make


ZOO = [
    ZooEntry("linear", lambda: nn.Linear(48, 40), lambda: (torch.randn(4, 48),)),
    ZooEntry("linear_subclass", lambda: ScaledLinear(48, 40), lambda: (torch.randn(4, 48),)),
    ZooEntry("conv1d", lambda: nn.Conv1d(8, 16, 9, padding=4), lambda: (torch.randn(2, 8, 20),)),
    ZooEntry(
        "conv2d_grouped_dilated_reflect",
        lambda: nn.Conv2d(16, 32, 3, groups=4, dilation=2, padding=2, padding_mode="reflect"),
        lambda: (torch.randn(2, 16, 9, 9),),
    ),
    ZooEntry(
        "conv2d_depthwise", lambda: nn.Conv2d(64, 64, 5, groups=64, padding=2), lambda: (torch.randn(2, 64, 8, 8),)
    ),
    ZooEntry(
        "conv2d_circular",
        lambda: nn.Conv2d(8, 16, 3, padding=1, padding_mode="circular"),
        lambda: (torch.randn(2, 8, 7, 7),),
    ),
    ZooEntry("conv3d", lambda: nn.Conv3d(4, 8, 3, stride=2), lambda: (torch.randn(1, 4, 7, 7, 7),)),
    ZooEntry(
        "conv_transpose1d", lambda: nn.ConvTranspose1d(16, 32, 5, stride=2, groups=2), lambda: (torch.randn(2, 16, 10),)
    ),
    ZooEntry(
        "conv_transpose2d_grouped_dilated",
        lambda: nn.ConvTranspose2d(16, 16, 3, stride=2, groups=4, dilation=2, output_padding=1),
        lambda: (torch.randn(2, 16, 6, 6),),
    ),
    ZooEntry("conv_transpose3d", lambda: nn.ConvTranspose3d(4, 8, 3), lambda: (torch.randn(1, 4, 4, 4, 4),)),
    ZooEntry("bilinear", lambda: nn.Bilinear(16, 12, 10), lambda: (torch.randn(4, 16), torch.randn(4, 12))),
    ZooEntry(
        "mha_batch_first",
        lambda: nn.MultiheadAttention(32, 4, batch_first=True),
        _mha_inputs(True),
        ("in_proj_weight",),
    ),
    ZooEntry(
        "mha_seq_first",
        lambda: nn.MultiheadAttention(32, 4, batch_first=False),
        _mha_inputs(False),
        ("in_proj_weight",),
    ),
    ZooEntry(
        "mha_kdim_vdim",
        lambda: nn.MultiheadAttention(32, 4, kdim=40, vdim=48, batch_first=True),
        _mha_inputs(True, 32, 40, 48),
        ("q_proj_weight", "k_proj_weight", "v_proj_weight"),
    ),
    ZooEntry("user_module_included", lambda: Affine(), lambda: (torch.randn(4, 48),), include=Affine),
]


def first_output(output: object) -> torch.Tensor:
    """MultiheadAttention returns (output, weights)."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


def by_channels(name: str, shape: tuple[int, ...], batch: int, *, r: float = 1.0, seed: int = 0):
    """A model of the app's zoo sparsified by channels (thresholds at ``r``, layers from 100 weights) and a random
    batch of ``batch`` inputs it was traced on; the warning naming the layers left dense is silenced."""
    import warnings

    from adasparse.app.models import create_model
    from adasparse.core.sparsify import sparsify

    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, input_shape=shape)
    x = torch.randn(batch, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify(model, init_threshold=r, min_params=100, granularity="channel", example_input=x)
    return model, x


class Attention(nn.Module):
    """Hand-written multi-head attention: separate projections, a per-head output scale, heads counted in
    ``num_heads``."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.head_scale = nn.Parameter(torch.linspace(0.5, 1.5, heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (
            layer(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
            for layer in (self.q_proj, self.k_proj, self.v_proj)
        )
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1)
        heads = (weights @ v) * self.head_scale.view(1, -1, 1, 1)
        return self.out_proj(heads.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))


class AttentionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.fc2(torch.relu(self.fc1(x)))


class AttentionNet(nn.Module):
    """Two blocks of hand-written attention (declared with ATTENTION_HEADS) and an MLP, on ``(batch, length, 8)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.blocks = nn.Sequential(AttentionBlock(), AttentionBlock())
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(x)).mean(dim=1))


def keep_head_scales(module: nn.Module, kept: list[int]) -> None:
    """``on_shrink`` of :class:`Attention`: keep the kept heads' scales."""
    module.head_scale = nn.Parameter(module.head_scale.detach()[kept].clone())


ATTENTION_HEADS = {
    Attention: AttentionHeads(
        query="q_proj",
        key="k_proj",
        value="v_proj",
        output="out_proj",
        num_heads="num_heads",
        on_shrink=keep_head_scales,
    )
}


class BertClassifier(nn.Module):
    """A two-layer BERT of four heads (Hugging Face's, built locally) and a linear head on the first token."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=16,
            attn_implementation="eager",
        )
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.bert(input_ids=ids).last_hidden_state[:, 0])


def bert_heads() -> dict:
    """The ``heads=`` declaration of Hugging Face's ``BertAttention`` (the library's)."""
    from adasparse.integrations.hf import bert_heads as declared

    return declared()
