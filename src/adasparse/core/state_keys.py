"""The ``state_dict`` keys of a pruned tensor, and the one reading of them that reports and exports share.

A pruned tensor ``<name>`` of a module is stored as ``<name>_orig`` (the raw weight) with its companions
``<name>_threshold`` (the scalar ``r``), ``<name>_mask`` (empty, or the weight's shape once the zeros are fixed) and
``<name>_centred`` (whether kept weights are centred). :func:`effective_from_state` turns those keys back into the
effective tensor and :func:`is_companion_key` tells the companions apart from ordinary keys; the parametrization
writes these keys, :mod:`~adasparse.core.report` and :mod:`adasparse.export` read them.
"""

from __future__ import annotations

from typing import Any

import torch

from .operator import effective_weight, grouped_weight

__all__ = [
    "CENTRED_SUFFIX",
    "LAYOUT_SUFFIX",
    "MASK_SUFFIX",
    "ORIG_SUFFIX",
    "THRESHOLD_SUFFIX",
    "effective_from_state",
    "is_companion_key",
]

ORIG_SUFFIX = "_orig"
THRESHOLD_SUFFIX = "_threshold"
MASK_SUFFIX = "_mask"
LAYOUT_SUFFIX = "_layout"
"""Only on structured tensors: ``[1, 0, 0]`` (output channels) or ``[2, R, C]`` (``R x C`` blocks); see
:mod:`~adasparse.core.granularity`."""
CENTRED_SUFFIX = "_centred"
"""A 0-d boolean buffer: whether kept weights hold ``w - mean(w)`` (the paper) or ``w``. States written before it
existed were centred."""


def effective_from_state(
    orig: torch.Tensor,
    threshold: Any = None,
    mask: Any = None,
    centred: Any = None,
    *,
    name: str = "weight",
    layout: Any = None,
) -> torch.Tensor | None:
    """The effective tensor a ``state_dict`` describes with ``<name>_orig`` and its companions, or ``None``.

    The one reading of the stored keys that reports and exports share: a mask of the weight's shape fixes the
    zeros (``orig * mask``: adasparse after :func:`freeze`, or ``torch.nn.utils.prune``); otherwise a one-element
    ``<name>_threshold`` applies the pruning operator, centred unless ``<name>_centred`` says otherwise (states
    written before that key existed were centred); anything else describes no pruned tensor.

    A ``<name>_layout`` buffer (``layout``) marks a structured tensor: ``R x C`` blocks are recomputed here; the
    zeros of output channels depend on the layers tied to them, so such a state is read through its model (or
    after the zeros are fixed, when it carries a mask).

    Raises:
        ValueError: a pruned ``orig`` that is not floating point (naming ``name``), a channel-structured tensor
            without a mask, or a malformed layout.
    """
    has_mask = isinstance(mask, torch.Tensor) and mask.shape == orig.shape
    has_threshold = isinstance(threshold, torch.Tensor) and threshold.numel() == 1
    if not (has_mask or has_threshold):
        return None
    if not orig.is_floating_point():
        raise ValueError(f"{name + ORIG_SUFFIX!r} is a pruned weight of dtype {orig.dtype}; it must be floating")
    with torch.no_grad():
        if has_mask:
            return orig.detach() * mask.detach()
        if orig.numel() == 0:
            return orig.detach().clone()
        if layout is not None:
            return _structured_from_state(orig.detach(), threshold.detach().reshape(()), layout, name)
        shifted = not (isinstance(centred, torch.Tensor) and centred.numel() == 1 and not bool(centred.reshape(())))
        return effective_weight(orig.detach(), threshold.detach().reshape(()).to(orig.dtype), centred=shifted)


def _structured_from_state(orig: torch.Tensor, threshold: torch.Tensor, layout: Any, name: str) -> torch.Tensor:
    from .granularity import BlockLayout  # granularity reads these keys' suffixes

    code = layout.tolist() if isinstance(layout, torch.Tensor) and layout.numel() == 3 else None
    if code is not None and code[0] == 2 and code[1] > 0 and code[2] > 0:
        blocks = BlockLayout(orig.shape, (int(code[1]), int(code[2])), name)
        keep, slope = blocks.keep_and_slope(orig, float(threshold))
        return grouped_weight(orig, threshold.to(orig.dtype), keep, slope)
    if code is not None and code[0] == 1:
        raise ValueError(
            f"{name} is pruned by output channels tied across layers: its zeros are known only with the whole model; "
            "load this state into the sparsified model (or read a state saved after the zeros were fixed)"
        )
    raise ValueError(f"{name + LAYOUT_SUFFIX!r} must be [1, 0, 0] or [2, R, C] with R, C > 0, got {layout!r}")


def is_companion_key(key: str, state: Any) -> bool:
    """Whether ``key`` of the mapping ``state`` is the threshold or mask of a pruned ``<name>_orig`` in it."""
    for suffix in (THRESHOLD_SUFFIX, MASK_SUFFIX, CENTRED_SUFFIX, LAYOUT_SUFFIX):
        if key.endswith(suffix):
            orig = state.get(key[: -len(suffix)] + ORIG_SUFFIX)
            companion = state[key]
            if not isinstance(orig, torch.Tensor) or not isinstance(companion, torch.Tensor):
                return False
            if suffix in (THRESHOLD_SUFFIX, CENTRED_SUFFIX):
                return companion.numel() == 1
            if suffix == LAYOUT_SUFFIX:
                return companion.numel() == 3 and not companion.is_floating_point()
            return companion.numel() == 0 or companion.shape == orig.shape
    return False
