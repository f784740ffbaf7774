"""What one threshold decides at once: single weights, whole output channels, or RxC blocks.

``granularity="element"`` (the default) prunes single weights: ``|w - mean(w)|`` is compared with
``clamp(r, 0, 5) * std(w)`` (:mod:`~adasparse.core.operator`). The structured granularities prune groups:

- ``"channel"``: every output channel (a row of a ``Linear``, a filter of a convolution, a column of a transposed
  convolution) is one group. Channels tied together (two convolutions whose outputs are added by a residual
  connection) form one :class:`~adasparse.core.channel_sets.ChannelSet` with one threshold and one mask, so the
  zeroed channels can be removed from the model (:func:`adasparse.shrink`) without changing what it computes;
- ``"block:RxC"``: the weight read as a matrix ``(out, in * kernel)`` is cut into ``R x C`` blocks (the layout of
  block-sparse kernels); ``R`` must divide the rows and ``C`` the columns.

A group's score is its L2 norm; a layer normalises its scores by their root mean square, as single weights are
normalised by their standard deviation, so one ``r`` means the same for every layer and granularity: a group is
zero iff ``score <= clamp(r, 0, 5) * rms(scores) + 1e-6``. If the scores were the magnitudes of a zero-mean
Gaussian the pruned fraction would be ``erf(r / sqrt(2))``; they are not (group norms concentrate), so the
projection and calibration steer on the measured scores, as they do for single weights. Kept weights keep their
own values (no centring). Blocks take the operator's straight-through gradient (the identity for the weights,
``-(rms / b) * <grad, pruned residual>`` for ``r``); channels are pruned where they are read and their pruned
activations get no gradient (:mod:`~adasparse.core.channel_sets`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from .operator import EPSILON, MAX_THRESHOLD

__all__ = ["BlockLayout", "Granularity", "GRANULARITY_FORMS", "channel_dim", "parse_granularity"]

GRANULARITY_FORMS = ("element", "channel", "block:RxC")
"""The accepted spellings (``R`` and ``C`` positive integers, e.g. ``"block:4x4"``)."""

_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")


@dataclass(frozen=True)
class Granularity:
    """A parsed granularity: ``kind`` is ``"element"``, ``"channel"`` or ``"block"``; ``block`` is ``(R, C)``."""

    kind: str
    block: tuple[int, int] | None = None

    def __str__(self) -> str:
        return f"block:{self.block[0]}x{self.block[1]}" if self.block else self.kind


def parse_granularity(value: str | Granularity) -> Granularity:
    """Parse ``"element"``, ``"channel"`` or ``"block:RxC"``.

    Raises:
        ValueError: any other value, naming the argument and the accepted forms.
    """
    if isinstance(value, Granularity):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("element", "channel"):
            return Granularity(text)
        match = _BLOCK.match(text)
        if match and int(match.group(1)) > 0 and int(match.group(2)) > 0:
            return Granularity("block", (int(match.group(1)), int(match.group(2))))
    raise ValueError(
        f"granularity must be one of {', '.join(repr(form) for form in GRANULARITY_FORMS)} "
        f"(R and C positive integers), got {value!r}"
    )


def _rms(scores: torch.Tensor) -> float:
    return math.sqrt(float(scores.double().pow(2).mean())) if scores.numel() else 0.0


def _keep_and_slope(scores: torch.Tensor, r: float) -> tuple[torch.Tensor, float]:
    """Which groups stay (``score > bound``) and ``d w_eff / d r`` per unit of pruned residual (``-rms / bound``)."""
    scale = _rms(scores)
    bound = min(max(r, 0.0), MAX_THRESHOLD) * scale + EPSILON
    return scores > bound, -scale / bound


class BlockLayout:
    """``R x C`` blocks of one weight read as a matrix ``(out, in * kernel)``.

    Args:
        shape: the weight's shape (at least 2-D).
        block: ``(R, C)``.
        name: the tensor's qualified name, for errors.

    Raises:
        ValueError: a 1-D weight, or ``R``/``C`` not dividing the rows/columns (naming the layer and shape).
    """

    kind = "block"

    def __init__(self, shape: torch.Size | tuple[int, ...], block: tuple[int, int], name: str) -> None:
        if len(shape) < 2:
            raise ValueError(
                f"granularity block:{block[0]}x{block[1]} needs a weight of 2 or more dimensions; "
                f"{name} has shape {tuple(shape)}"
            )
        rows = int(shape[0])
        columns = int(math.prod(shape[1:]))
        if rows % block[0] or columns % block[1]:
            raise ValueError(
                f"granularity block:{block[0]}x{block[1]} does not tile {name}: its weight read as a matrix is "
                f"{rows}x{columns} (shape {tuple(shape)}); R must divide {rows} and C {columns}, or exclude the layer"
            )
        self.block = block
        self.shape = tuple(int(size) for size in shape)
        self._grid = (rows // block[0], block[0], columns // block[1], block[1])

    def scores(self, weight: torch.Tensor) -> torch.Tensor:
        """Each block's L2 norm, a 1-D float tensor in row-major block order."""
        blocks = weight.detach().reshape(self._grid).float()
        return blocks.pow(2).sum(dim=(1, 3)).sqrt().reshape(-1)

    def expand(self, keep: torch.Tensor) -> torch.Tensor:
        """A boolean mask of the weight's shape from one flag per block."""
        grid = keep.reshape(self._grid[0], 1, self._grid[2], 1).expand(self._grid)
        return grid.reshape(self.shape)

    def keep_and_slope(self, weight: torch.Tensor, r: float) -> tuple[torch.Tensor, float]:
        keep, slope = _keep_and_slope(self.scores(weight), r)
        return self.expand(keep), slope

    def __repr__(self) -> str:
        return f"BlockLayout(block={self.block[0]}x{self.block[1]}, shape={self.shape})"


def channel_dim(module: nn.Module) -> int:
    """The weight dimension holding a module's output channels (1 for transposed convolutions, else 0)."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
