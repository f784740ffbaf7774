"""Data-parallel training with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``adasparse train`` under ``torchrun --nproc-per-node N -m adasparse train ...`` reads the rank and world size that
torchrun sets, joins the process group (gloo on CPU, nccl on GPU), shards every epoch's batches across ranks and
wraps the model in ``DistributedDataParallel``. Thresholds are ordinary parameters, so DDP averages their gradients
like any weight's and every rank holds the same thresholds, weights and masks after every step. Only rank 0
writes files and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "context", "is_main_process", "print_main", "wrap", "all_reduce_sum", "barrier", "teardown"]


@dataclass(frozen=True)
class Context:
    """This process's place in the job (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs (rank 0)."""
        return self.rank == 0


def context(device: torch.device) -> Context:
    """Join the process group torchrun describes in the environment (once per process); a lone process gets the
    single-process context.

    Args:
        device: the training device; CUDA selects the nccl backend and the GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Context(rank, world_size, local_rank)


def is_main_process() -> bool:
    """Rank 0 under torchrun (which sets ``RANK``), or a lone process; known before the process group is joined."""
    return int(os.environ.get("RANK", "0")) == 0


def print_main(message: str) -> None:
    """Print ``message`` (flushed) in the main process only."""
    if is_main_process():
        print(message, flush=True)


def wrap(model: nn.Module, ctx: Context, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, the model itself otherwise."""
    if not ctx.distributed:
        return model
    device_ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(values: list[torch.Tensor], ctx: Context) -> list[torch.Tensor]:
    """Sum each tensor over the ranks (one collective for all of them)."""
    if not ctx.distributed:
        return values
    packed = torch.stack([v.double() for v in values])
    dist.all_reduce(packed)
    return [packed[i].to(v.dtype) for i, v in enumerate(values)]


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
