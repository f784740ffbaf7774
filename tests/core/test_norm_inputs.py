"""Which layers a per-channel normalization reads, found on one forward pass."""

from __future__ import annotations

import copy
import io

import torch
import torch.nn.modules.module as module_hooks
from torch import nn

from adasparse.core.norm_inputs import NormInputs


class _Residual(nn.Module):
    """conv1 -> BN (direct); conv2 + shortcut -> BN (through an addition: not followed); conv3 -> relu -> BN
    (functional: not followed); a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(4, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.conv2, self.bn2 = nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8)
        self.conv3, self.bn3 = nn.Conv1d(8, 8, 1), nn.BatchNorm1d(8)
        self.head = nn.Linear(8 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv1(x))
        y = self.bn2(self.conv2(y) + y)
        y = self.bn3(torch.relu(self.conv3(y)))
        return self.head(y.flatten(1))


def _found(model: nn.Module, layers: list[nn.Module], *inputs: torch.Tensor) -> list[list[bool]]:
    reports: list[list[bool]] = []
    NormInputs(model, layers, reports.append)
    model(*inputs)
    return reports


def test_a_layer_read_directly_by_a_norm_is_found_and_other_paths_are_not() -> None:
    model = _Residual()
    layers = [model.conv1, model.conv2, model.conv3, model.head]
    assert _found(model, layers, torch.randn(2, 4, 5)) == [[True, False, False, False]]


def test_activation_and_dropout_modules_pass_a_layer_on_to_the_norm() -> None:
    model = nn.Sequential(
        nn.Linear(6, 8),
        nn.ReLU(inplace=True),
        nn.Dropout(0.1),
        nn.GELU(),
        nn.BatchNorm1d(8),  # found
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.LayerNorm(8),  # LayerNorm mixes the features: not a per-channel norm
        nn.Conv1d(1, 2, 3),
        nn.GroupNorm(1, 2),  # GroupNorm: found
    )
    model.train()
    flat = nn.Sequential(*model[:8])
    assert _found(flat, [flat[0], flat[5]], torch.randn(4, 6)) == [[True, False]]
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.GroupNorm(1, 2), nn.InstanceNorm1d(2))
    assert _found(conv, [conv[0]], torch.randn(4, 1, 6)) == [[True]]


def _global_hooks() -> int:
    return len(module_hooks._global_forward_hooks) + len(module_hooks._global_forward_pre_hooks)


def test_the_hooks_leave_after_one_forward_and_report_once() -> None:
    model = _Residual()
    before = _global_hooks()
    reports: list[list[bool]] = []
    watcher = NormInputs(model, [model.conv1, model.head], reports.append)
    assert _global_hooks() == before + 2
    assert not model.conv1._forward_hooks and not model.bn1._forward_pre_hooks  # nothing stored on the model
    model(torch.randn(2, 4, 5))
    model(torch.randn(2, 4, 5))
    watcher.finish()
    assert reports == [[True, False]] and watcher.done
    assert _global_hooks() == before


def test_a_forward_through_a_submodule_is_read_at_finish_and_cancel_reports_nothing() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)), nn.Linear(8, 2))
    before = _global_hooks()
    reports: list[list[bool]] = []
    watcher = NormInputs(model, [model[0][0], model[1]], reports.append)
    model[0](torch.randn(3, 4))  # the root's forward never runs: nothing is reported yet
    assert reports == [] and not watcher.done
    watcher.finish()
    assert reports == [[True, False]]
    cancelled: list[list[bool]] = []
    NormInputs(model, [model[0][0]], cancelled.append).cancel()
    model(torch.randn(3, 4))
    assert cancelled == [] and _global_hooks() == before


def test_the_watched_model_pickles_and_a_copy_is_neither_watched_nor_hooked() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    reports: list[list[bool]] = []
    watcher = NormInputs(model, [model[0], model[2]], reports.append)
    torch.save(model, io.BytesIO())  # nothing unpicklable was put on the model
    copy.deepcopy(model)(torch.randn(3, 4))  # a copy's forward (an EMA model, say) is not the watched one
    assert reports == [] and not watcher.done
    model(torch.randn(3, 4))
    assert reports == [[True, False]]


def test_a_module_holding_two_pruned_tensors_flags_both() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    assert _found(model, [model[0], model[0]], torch.randn(3, 4)) == [[True, True]]
