"""One tensor encoded and decoded in memory (export/sparse_codec.py); files and bad files:
test_sparse_format.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adasparse.export.sparse_codec import decode, encode, resolve_values_dtype
from adasparse.export.sparse_schema import DTYPES, Entry


def _round_trip(tensor: torch.Tensor, values_dtype: torch.dtype | None = None) -> tuple[dict, torch.Tensor]:
    entry, stored = encode("t", tensor, values_dtype)
    parsed = Entry(entry["encoding"], DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["keys"])
    stored_name = None if values_dtype is None else str(values_dtype).replace("torch.", "")
    return entry, decode(Path("m.safetensors"), "t", parsed, stored, stored_name)


@pytest.mark.parametrize(("sparsity", "encoding"), [(0.0, "dense"), (0.7, "bitmask"), (0.99, "csr")])
def test_each_encoding_round_trips(sparsity: float, encoding: str) -> None:
    torch.manual_seed(0)
    tensor = torch.randn(64, 96)
    tensor[torch.rand_like(tensor) < sparsity] = 0.0
    entry, back = _round_trip(tensor)
    assert entry["encoding"] == encoding and entry["nnz"] == int((tensor != 0).sum())
    assert (
        set(entry["keys"])
        == {"dense": {"data"}, "bitmask": {"mask", "values"}, "csr": {"indptr", "indices", "values"}}[encoding]
    )
    assert torch.equal(back, tensor) and back.dtype == tensor.dtype


def test_half_values_and_integer_tensors() -> None:
    tensor = torch.zeros(32, 32)
    tensor[0, :4] = torch.tensor([1.0, -2.5, 3.25, 1e-3])
    entry, back = _round_trip(tensor, torch.float16)
    assert back.dtype == torch.float32 and torch.equal(back, tensor.half().float())
    entry, back = _round_trip(torch.tensor([0, 5, 0, 7]))
    assert entry["encoding"] == "dense" and torch.equal(back, torch.tensor([0, 5, 0, 7]))
    with pytest.raises(ValueError, match="beyond the range of float16"):
        encode("t", torch.tensor([1e6, 0.0]), torch.float16)


def test_values_dtype_names() -> None:
    assert resolve_values_dtype(None) is None
    assert resolve_values_dtype("fp16") is resolve_values_dtype("half") is torch.float16
    assert resolve_values_dtype("BF16") is resolve_values_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="values_dtype must be None, torch.float16 or torch.bfloat16"):
        resolve_values_dtype(torch.float32)
