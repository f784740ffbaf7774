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

from .operator import effective_weight

__all__ = [
    "CENTRED_SUFFIX",
    "MASK_SUFFIX",
    "ORIG_SUFFIX",
    "THRESHOLD_SUFFIX",
    "effective_from_state",
    "is_companion_key",
]

ORIG_SUFFIX = "_orig"
THRESHOLD_SUFFIX = "_threshold"
MASK_SUFFIX = "_mask"
CENTRED_SUFFIX = "_centred"
"""A 0-d boolean buffer: whether kept weights hold ``w - mean(w)`` (the paper) or ``w``. States written before it
existed were centred."""


def effective_from_state(
    orig: torch.Tensor, threshold: Any = None, mask: Any = None, centred: Any = None, *, name: str = "weight"
) -> torch.Tensor | None:
    """The effective tensor a ``state_dict`` describes with ``<name>_orig`` and its companions, or ``None``.

    The one reading of the stored keys that reports and exports share: a mask of the weight's shape fixes the
    zeros (``orig * mask``: adasparse after :func:`freeze`, or ``torch.nn.utils.prune``); otherwise a one-element
    ``<name>_threshold`` applies the pruning operator, centred unless ``<name>_centred`` says otherwise (states
    written before that key existed were centred); anything else describes no pruned tensor.

    Raises:
        ValueError: a pruned ``orig`` that is not floating point (naming ``name``).
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
        shifted = not (isinstance(centred, torch.Tensor) and centred.numel() == 1 and not bool(centred.reshape(())))
        return effective_weight(orig.detach(), threshold.detach().reshape(()).to(orig.dtype), centred=shifted)


def is_companion_key(key: str, state: Any) -> bool:
    """Whether ``key`` of the mapping ``state`` is the threshold or mask of a pruned ``<name>_orig`` in it."""
    for suffix in (THRESHOLD_SUFFIX, MASK_SUFFIX, CENTRED_SUFFIX):
        if key.endswith(suffix):
            orig = state.get(key[: -len(suffix)] + ORIG_SUFFIX)
            companion = state[key]
            if not isinstance(orig, torch.Tensor) or not isinstance(companion, torch.Tensor):
                return False
            if suffix in (THRESHOLD_SUFFIX, CENTRED_SUFFIX):
                return companion.numel() == 1
            return companion.numel() == 0 or companion.shape == orig.shape
    return False
