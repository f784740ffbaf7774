"""Magnitude pruning baselines on ``torch.nn.utils.prune`` masks: one-shot and gradual (Zhu & Gupta, 2017).

These are the methods users compare against: prune the smallest-magnitude weights, either all at once (after or
during training) or gradually along a cubic schedule while training. Masks are ``torch.nn.utils.prune``
reparametrizations (``weight_orig`` and a ``weight_mask`` buffer), so they are saved in ``state_dict`` and pruned
weights receive no gradient; a pruned weight never comes back.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from ..core._checks import check_choice, check_fraction
from ..core.parametrization import pruned_tensors
from ..core.selection import Selector, select_layers

__all__ = ["MagnitudePruner", "SCOPES"]

SCOPES = ("global", "layer")


class MagnitudePruner:
    """Magnitude masks on the prunable layers of ``model`` (the same selection as :func:`adasparse.sparsify`).

    Args:
        model: a plain model; every selected weight gets an all-ones mask now (``torch.nn.utils.prune.identity``).
        scope: ``"global"`` ranks all selected weights together; ``"layer"`` prunes every layer to the same sparsity.
        min_params, include, exclude: layer selection, as for :func:`adasparse.sparsify`, attention projections
            included. ``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``, so the
            ``torch.nn.utils.prune`` mask of that weight would be applied once and never again; the attention module
            re-applies it before each of its forward passes (:func:`_follow_submodule_masks`).

    Example::

        >>> pruner = MagnitudePruner(model)
        >>> pruner.prune_to(0.9)          # 90% of the selected weights are now zero
        >>> pruner.remove()               # plain modules with the zeros baked in
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        scope: str = "global",
        min_params: int = 1000,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
    ) -> None:
        self.scope = check_choice(scope, "scope", SCOPES)
        sparsified = pruned_tensors(model)
        if sparsified:
            raise ValueError(
                f"model is sparsified with learned thresholds ({len(sparsified)} tensors, e.g. "
                f"{sparsified[0].name!r}): call adasparse.desparsify(model) first"
            )
        selections = select_layers(model, min_params=min_params, include=include, exclude=exclude)
        if not selections:
            raise ValueError(f"model has no prunable layer with at least min_params={min_params} weight elements")
        self.targets: list[tuple[str, nn.Module, str]] = []
        for selection in selections:
            for tensor_name in selection.tensor_names:
                torch_prune.identity(selection.module, tensor_name)
                self.targets.append((selection.name, selection.module, tensor_name))
        self._hooks = [
            module.register_forward_pre_hook(_follow_submodule_masks)
            for module in model.modules()
            if isinstance(module, nn.MultiheadAttention)
        ]

    @property
    def names(self) -> list[str]:
        return [f"{name}.{tensor}" if name else tensor for name, _, tensor in self.targets]

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(getattr(m, t + "_orig"), getattr(m, t + "_mask")) for _, m, t in self.targets]

    @property
    def numel(self) -> int:
        return sum(mask.numel() for _, mask in self._pairs())

    def sparsity(self) -> float:
        """Fraction of masked-out weights over the selected tensors."""
        pairs = self._pairs()
        return sum(int((mask == 0).sum()) for _, mask in pairs) / sum(mask.numel() for _, mask in pairs)

    def layer_sparsities(self) -> list[float]:
        return [float((mask == 0).float().mean()) for _, mask in self._pairs()]

    def layer_rows(self) -> list[dict[str, object]]:
        """Per selected tensor: name, size and actual sparsity (no analytic estimate or threshold)."""
        return [
            {"layer": name, "numel": mask.numel(), "actual": sparsity, "analytic": None, "threshold": None}
            for name, (_, mask), sparsity in zip(self.names, self._pairs(), self.layer_sparsities())
        ]

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Zero exactly ``round(sparsity * n)`` weights (globally, or per layer), smallest ``|weight|`` first.

        Weights already pruned stay pruned (their score is 0), so masks only grow.
        """
        sparsity = check_fraction(sparsity, "sparsity")
        pairs = self._pairs()
        if self.scope == "layer":
            for weight, mask in pairs:
                mask.copy_(_keep_largest(weight.abs() * mask, round(sparsity * mask.numel())))
            return
        scores = torch.cat([(weight.abs() * mask).reshape(-1) for weight, mask in pairs])
        keep = _keep_largest(scores, round(sparsity * scores.numel()))
        offset = 0
        for _, mask in pairs:
            mask.copy_(keep[offset : offset + mask.numel()].view_as(mask))
            offset += mask.numel()

    @torch.no_grad()
    def freeze_zeros(self) -> None:
        """Set every mask to the weight's current non-zero pattern (exact zeros stay zero from now on)."""
        for weight, mask in self._pairs():
            mask.copy_((weight != 0).to(mask.dtype))

    def remove(self) -> None:
        """Make the masks permanent: plain ``weight`` parameters with zeros, no ``weight_orig``/``weight_mask``."""
        for _, module, tensor_name in self.targets:
            torch_prune.remove(module, tensor_name)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _follow_submodule_masks(module: nn.Module, inputs: object) -> None:
    """Re-apply the ``torch.nn.utils.prune`` masks of ``module.out_proj`` (a forward pre-hook of an attention module,
    which reads ``out_proj.weight`` without calling ``out_proj``): ``weight = weight_orig * weight_mask`` now, with
    this step's ``weight_orig``, as ``out_proj``'s own hook would if it were called."""
    out_proj = module.out_proj
    for hook in list(out_proj._forward_pre_hooks.values()):
        if isinstance(hook, torch_prune.BasePruningMethod):
            hook(out_proj, inputs)


def _keep_largest(scores: torch.Tensor, pruned: int) -> torch.Tensor:
    """A float mask zeroing the ``pruned`` smallest scores (exact count; ties broken by position)."""
    keep = torch.ones_like(scores)
    if pruned > 0:
        flat = keep.view(-1)
        flat[torch.topk(scores.reshape(-1), pruned, largest=False, sorted=False).indices] = 0.0
    return keep
