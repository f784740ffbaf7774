"""Batches from in-memory tensors: shuffled with a torch.Generator, transformed on the target device.

Replaces ``torch.utils.data.DataLoader`` for data that fits in memory: no per-example Python work, no worker
processes, and a generator whose state can be checkpointed, so a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import torch

__all__ = ["BatchLoader"]

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class BatchLoader:
    """Iterate ``(inputs, labels)`` batches over tensors.

    Args:
        x, y: stored inputs and labels (first dimension = examples).
        batch_size: examples per batch (``>= 1``).
        shuffle: draw a new order every epoch from ``generator``.
        generator: CPU generator for the order and for random augmentation.
        transform: ``fn(batch, generator) -> float batch``, applied after moving the batch to ``device``.
        device: where batches go.
        prefetch: batches prepared ahead by one background thread (0 = prepare in the calling thread). Order and
            random draws are identical either way.
        drop_last: skip a final incomplete batch.
        shard: ``(rank, world_size)`` for distributed training, as ``DistributedSampler`` does it: every rank
            draws the same order (same generator state), pads it by wrapping around to a multiple of
            ``world_size`` and takes every ``world_size``-th example from position ``rank``. All ranks get the same
            number of batches, and step ``k`` of ``world_size`` ranks covers what step ``k`` of one process with
            ``world_size`` times the batch size covers.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        transform: Transform | None = None,
        device: torch.device | str = "cpu",
        prefetch: int = 0,
        drop_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        rank, world_size = shard
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        self.shard = (rank, world_size)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.transform = transform
        self.device = torch.device(device)
        self.prefetch = prefetch
        self.drop_last = drop_last

    def _examples(self) -> int:
        world_size = self.shard[1]
        return -(-len(self.x) // world_size)

    def __len__(self) -> int:
        full, rest = divmod(self._examples(), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _order(self) -> torch.Tensor | None:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        rank, world_size = self.shard
        if world_size == 1:
            return order
        if order is None:
            order = torch.arange(n)
        padded = torch.cat([order, order[: self._examples() * world_size - n]])
        return padded[rank::world_size]

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        non_blocking = self.device.type == "cuda"
        for index in range(len(self)):
            start = index * self.batch_size
            if order is None:
                x, y = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                chosen = order[start : start + self.batch_size]
                x, y = self.x[chosen], self.y[chosen]
            x = x.to(self.device, non_blocking=non_blocking)
            y = y.to(self.device, non_blocking=non_blocking)
            if self.transform is not None:
                x = self.transform(x, self.generator)
            yield x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.prefetch == 0:
            yield from self._batches()
            return
        yield from _prefetched(self._batches(), self.prefetch)


_DONE = object()


def _prefetched(batches: Iterator, depth: int) -> Iterator:
    """Run ``batches`` in a background thread, ``depth`` items ahead; errors are re-raised in the caller."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            items.put(error)

    thread = threading.Thread(target=produce, name="adasparse-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
