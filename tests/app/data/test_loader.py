"""BatchLoader: every example once per epoch, reproducible order, identical batches with prefetching."""

from __future__ import annotations

import pytest
import torch

from adasparse.app.data.loader import BatchLoader


def _data(n: int = 103) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n)


def _epoch(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_each_example_once_and_lengths() -> None:
    x, y = _data()
    loader = BatchLoader(x, y, 10, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 11 and len(batches[-1][1]) == 3
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103))
    assert all(torch.equal(bx.squeeze(1).long(), by) for bx, by in batches)
    assert len(BatchLoader(x, y, 10, drop_last=True)) == 10
    ordered = torch.cat([b[1] for b in BatchLoader(x, y, 10)])
    assert ordered.tolist() == list(range(103))


def test_order_reproducible_from_generator_state() -> None:
    x, y = _data()
    generator = torch.Generator().manual_seed(1)
    loader = BatchLoader(x, y, 16, shuffle=True, generator=generator)
    _epoch(loader)
    state = generator.get_state()
    second = [b[1] for b in _epoch(loader)]
    generator.set_state(state)
    assert all(torch.equal(a, b) for a, b in zip(second, [b[1] for b in _epoch(loader)]))


def _noisy(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return batch + torch.rand(batch.shape, generator=generator)


def test_prefetch_gives_identical_batches_and_generator_state() -> None:
    x, y = _data(500)
    results = []
    for prefetch in (0, 3):
        generator = torch.Generator().manual_seed(7)
        loader = BatchLoader(x, y, 32, shuffle=True, generator=generator, transform=_noisy, prefetch=prefetch)
        batches = _epoch(loader) + _epoch(loader)
        results.append((batches, generator.get_state()))
    (plain, state_plain), (fetched, state_fetched) = results
    assert torch.equal(state_plain, state_fetched)
    for (ax, ay), (bx, by) in zip(plain, fetched):
        assert torch.equal(ax, bx) and torch.equal(ay, by)


def test_prefetch_errors_reach_the_caller_and_early_exit_stops_the_thread() -> None:
    def broken(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise RuntimeError("bad transform")

    x, y = _data()
    with pytest.raises(RuntimeError, match="bad transform"):
        _epoch(BatchLoader(x, y, 10, transform=broken, prefetch=2))
    loader = BatchLoader(x, y, 10, prefetch=2)
    for _ in loader:
        break  # the generator's finally stops and joins the producer


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 4, "prefetch": -1}, "prefetch must be >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    x, y = _data()
    with pytest.raises(ValueError, match=message):
        BatchLoader(x, y, **kwargs)
    with pytest.raises(ValueError, match="same length"):
        BatchLoader(x, y[:5], 4)


def test_shards_partition_the_global_batches() -> None:
    x, y = _data(103)
    single = BatchLoader(x, y, 20, shuffle=True, generator=torch.Generator().manual_seed(3))
    shards = [
        BatchLoader(x, y, 10, shuffle=True, generator=torch.Generator().manual_seed(3), shard=(rank, 2))
        for rank in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 6  # 52 examples each (103 padded to 104)
    global_batches = [b[1] for b in single]
    rank_batches = [[b[1] for b in shard] for shard in shards]
    for step, expected in enumerate(global_batches[:-1]):
        union = torch.cat([rank_batches[0][step], rank_batches[1][step]])
        assert sorted(union.tolist()) == sorted(expected.tolist())
    last = set(torch.cat([rank_batches[0][-1], rank_batches[1][-1]]).tolist())
    assert set(global_batches[-1].tolist()) <= last and len(last) == 4  # the last step is padded by wrapping
    seen = torch.cat([torch.cat(batches) for batches in rank_batches])
    assert set(seen.tolist()) == set(range(103)) and len(seen) == 104
    with pytest.raises(ValueError, match="shard must be"):
        BatchLoader(x, y, 4, shard=(2, 2))
