"""One tensor in the sparse format: encoded as dense, bitmask or CSR, whichever is smallest, and decoded back from
the stored parts its validated entry names, checking them on the way (the encodings: :mod:`.sparse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .sparse_schema import COMPRESSIBLE, DTYPES, ENCODINGS, Entry, dtype_name

__all__ = ["decode", "encode", "resolve_values_dtype"]

_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_VALUES_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_INT16_MAX_COLUMNS = 32768
_INT32_MAX = 2**31 - 1


def resolve_values_dtype(values_dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``save_sparse``'s ``values_dtype`` as a dtype: ``None``, float16 or bfloat16 (``ValueError`` otherwise)."""
    if values_dtype is None:
        return None
    if isinstance(values_dtype, torch.dtype):
        if values_dtype in (torch.float16, torch.bfloat16):
            return values_dtype
    elif isinstance(values_dtype, str) and values_dtype.lower() in _VALUES_DTYPES:
        return _VALUES_DTYPES[values_dtype.lower()]
    raise ValueError(
        f"values_dtype must be None, torch.float16 or torch.bfloat16 ('fp16', 'bf16'), got {values_dtype!r}"
    )


def _size_estimates(numel: int, nnz: int, rows: int, cols: int, value_size: int) -> dict[str, int]:
    sizes = {"dense": numel * value_size, "bitmask": (numel + 7) // 8 + nnz * value_size}
    if rows > 0 and cols <= _INT32_MAX and nnz <= _INT32_MAX:
        index_size = 2 if cols <= _INT16_MAX_COLUMNS else 4
        sizes["csr"] = nnz * (index_size + value_size) + (rows + 1) * 4
    return sizes


def _to_values_dtype(name: str, values: torch.Tensor, values_dtype: torch.dtype | None) -> torch.Tensor:
    if values_dtype is None or values.dtype == values_dtype:
        return values
    converted = values.to(values_dtype)
    if bool(torch.isinf(converted).any()) and not bool(torch.isinf(values).any()):
        raise ValueError(
            f"{name} has values beyond the range of {dtype_name(values_dtype)} (largest magnitude "
            f"{values.abs().max().item():.4g}); use values_dtype=torch.bfloat16 or None"
        )
    return converted


def encode(
    name: str, tensor: torch.Tensor, values_dtype: torch.dtype | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata entry and the stored tensors of one state_dict entry."""
    entry: dict[str, Any] = {"dtype": dtype_name(tensor.dtype), "shape": list(tensor.shape)}
    if tensor.dtype not in DTYPES.values():
        raise ValueError(f"{name} has dtype {tensor.dtype}, which safetensors cannot store")
    numel = tensor.numel()
    flat = tensor.reshape(-1)
    nonzero = flat != 0 if tensor.dtype in COMPRESSIBLE else flat.view(_BITS_VIEW[flat.element_size()]) != 0
    nnz = int(nonzero.sum())
    entry.update(nnz=nnz, sparsity=1.0 - nnz / numel if numel else 0.0)
    if tensor.dtype not in COMPRESSIBLE or numel == 0:
        entry.update(encoding="dense", keys={"data": name})
        return entry, {name: _to_values_dtype(name, tensor.contiguous(), values_dtype).clone()}
    stored_dtype = values_dtype or tensor.dtype
    value_size = torch.empty((), dtype=stored_dtype).element_size()
    rows = tensor.shape[0] if tensor.dim() >= 1 else 0
    cols = numel // rows if rows else 0
    sizes = _size_estimates(numel, nnz, rows, cols, value_size)
    encoding = min(sizes, key=lambda k: (sizes[k], ENCODINGS.index(k)))
    entry["encoding"] = encoding
    if encoding == "dense":
        entry["keys"] = {"data": name}
        return entry, {name: _to_values_dtype(name, tensor.contiguous(), values_dtype).clone()}
    values = _to_values_dtype(name, flat[nonzero], values_dtype).contiguous()
    if encoding == "bitmask":
        packed = np.packbits(nonzero.numpy(), bitorder="little")
        keys = {"mask": f"{name}::mask", "values": f"{name}::values"}
        entry["keys"] = keys
        return entry, {keys["mask"]: torch.from_numpy(packed), keys["values"]: values}
    positions = nonzero.nonzero().reshape(-1)
    row_ids = torch.div(positions, cols, rounding_mode="floor")
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    indptr[1:] = torch.bincount(row_ids, minlength=rows).cumsum(0)
    index_dtype = torch.int16 if cols <= _INT16_MAX_COLUMNS else torch.int32
    keys = {"indptr": f"{name}::indptr", "indices": f"{name}::indices", "values": f"{name}::values"}
    entry["keys"] = keys
    return entry, {
        keys["indptr"]: indptr.to(torch.int32),
        keys["indices"]: (positions - row_ids * cols).to(index_dtype),
        keys["values"]: values,
    }


def _stored(
    path: Path,
    name: str,
    tensors: dict[str, torch.Tensor],
    keys: dict[str, str],
    part: str,
    dtypes: tuple[torch.dtype, ...],
    length: int | None = None,
) -> torch.Tensor:
    key = keys[part]
    tensor = tensors[key]
    if tensor.dtype not in dtypes:
        allowed = ", ".join(dtype_name(d) for d in dtypes)
        raise ValueError(f"{path}: {key!r} has dtype {dtype_name(tensor.dtype)}, expected {allowed}")
    if length is not None and tuple(tensor.shape) != (length,):
        raise ValueError(f"{path}: {key!r} has shape {tuple(tensor.shape)}, expected ({length},)")
    if length is None and tensor.dim() != 1:
        raise ValueError(f"{path}: {key!r} must be 1-D, has shape {tuple(tensor.shape)}")
    return tensor


def decode(
    path: Path, name: str, entry: Entry, tensors: dict[str, torch.Tensor], values_dtype: str | None
) -> torch.Tensor:
    """The tensor ``name`` of ``path`` rebuilt from its stored parts in ``tensors``; ``ValueError`` naming the file
    when a part does not fit ``entry`` (dtype, length, CSR row pointers or column indices)."""
    dtype, shape, keys, numel = entry.dtype, entry.shape, entry.keys, entry.numel
    stored_dtypes = (dtype,) if dtype not in COMPRESSIBLE or values_dtype is None else (DTYPES[values_dtype],)
    if entry.encoding == "dense":
        return _dense(path, keys["data"], tensors, shape, stored_dtypes, dtype)
    if entry.encoding == "bitmask":
        mask_bytes = _stored(path, name, tensors, keys, "mask", (torch.uint8,), length=(numel + 7) // 8)
        bits = np.unpackbits(mask_bytes.numpy(), count=numel, bitorder="little").astype(bool)
        nonzero = torch.from_numpy(bits)
        values = _stored(path, name, tensors, keys, "values", stored_dtypes, length=int(nonzero.sum()))
        out = torch.zeros(numel, dtype=values.dtype)
        out[nonzero] = values
        return out.to(dtype).reshape(shape)
    rows = shape[0]
    cols = numel // rows if rows else 0
    indptr = _stored(path, name, tensors, keys, "indptr", (torch.int32,), length=rows + 1).to(torch.int64)
    indices = _stored(path, name, tensors, keys, "indices", (torch.int16, torch.int32)).to(torch.int64)
    nnz = indices.numel()
    values = _stored(path, name, tensors, keys, "values", stored_dtypes, length=nnz)
    counts = indptr[1:] - indptr[:-1]
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz or bool((counts < 0).any()):
        raise ValueError(f"{path}: tensor {name!r} has inconsistent CSR row pointers")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= cols):
        raise ValueError(f"{path}: tensor {name!r} has CSR column indices outside [0, {cols})")
    positions = torch.repeat_interleave(torch.arange(rows), counts) * cols + indices
    if nnz > 1 and not bool((positions[1:] > positions[:-1]).all()):
        raise ValueError(f"{path}: tensor {name!r} has unsorted or repeated CSR column indices")
    out = torch.zeros(numel, dtype=values.dtype)
    out[positions] = values
    return out.to(dtype).reshape(shape)


def _dense(
    path: Path,
    key: str,
    tensors: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    stored_dtypes: tuple[torch.dtype, ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    data = tensors[key]
    if data.dtype not in stored_dtypes:
        raise ValueError(
            f"{path}: {key!r} has dtype {dtype_name(data.dtype)}, the metadata says "
            f"{', '.join(dtype_name(d) for d in stored_dtypes)}"
        )
    if tuple(data.shape) != shape:
        raise ValueError(f"{path}: {key!r} has shape {tuple(data.shape)}, the metadata says {shape}")
    return data.to(dtype)
