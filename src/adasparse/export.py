"""Compressed checkpoints of pruned models: each tensor stored dense, as a bitmask or as CSR, whichever is smallest.

A file written by :func:`save_sparse` is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file:
no pickle, nothing is executed on load. Its header carries one metadata entry, ``"adasparse"``, a JSON string::

    {"format": "adasparse.sparse", "version": 1, "adasparse": "0.1.0", "torch": "2.13.0+cpu",
     "values_dtype": null,
     "tensors": {"<name>": {"encoding": "dense" | "bitmask" | "csr", "dtype": "float32", "shape": [300, 784],
                            "nnz": 11760, "sparsity": 0.95, "keys": {...stored tensor names...}}, ...},
     "metadata": {...user metadata, e.g. a run's config.json...}}

Encodings of one tensor ``<name>`` (``nnz`` = number of stored non-zeros):

- ``dense``: the tensor itself under ``<name>``.
- ``bitmask``: ``<name>::mask``, the non-zero mask of the flattened tensor packed 8 elements a byte with
  ``numpy.packbits(..., bitorder="little")`` (element ``8*j + i`` is bit ``i`` of byte ``j``, least significant bit
  first; unused trailing bits are zero), and ``<name>::values``, the ``nnz`` non-zero values in row-major order.
- ``csr``: the tensor viewed as 2-D ``(shape[0], numel // shape[0])``; ``<name>::indptr`` (int32, ``rows + 1``
  row pointers), ``<name>::indices`` (column indices, int16 when there are at most 32768 columns, else int32)
  and ``<name>::values``.

Only floating tensors (float16, bfloat16, float32, float64) are compressed; integer and boolean tensors (e.g.
``num_batches_tracked``) are stored as they are. Without ``values_dtype`` a round trip is bitwise exact, with one
exception: a zero is a zero, so ``-0.0`` comes back as ``0.0`` (masks applied by multiplication, as
``torch.nn.utils.prune`` does, leave ``-0.0`` in about half the pruned places; keeping their sign would cost a bit per
weight). NaN and infinities are values like any other. With ``values_dtype`` (float16 or bfloat16) floating values
are stored in that type and converted back on load: this is lossy (rounding to ~3 significant digits for float16,
~2 for bfloat16).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from ._io import atomic_write_bytes
from ._version import __version__
from .parametrization import (
    MASK_SUFFIX,
    ORIG_SUFFIX,
    THRESHOLD_SUFFIX,
    effective_from_state,
    is_companion_key,
    pruned_tensors,
)

__all__ = [
    "ENCODINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "ExportResult",
    "RunWeights",
    "dense_size",
    "export_run",
    "load_run_weights",
    "load_sparse",
    "plain_state_dict",
    "read_sparse_metadata",
    "save_sparse",
]

FORMAT = "adasparse.sparse"
FORMAT_VERSION = 1
METADATA_KEY = "adasparse"
ENCODINGS = ("dense", "bitmask", "csr")

StateDictLike = Union[nn.Module, Mapping[str, torch.Tensor]]

_INSTALL_HINT = 'pip install "adasparse[export]"'
_COMPRESSIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_VALUES_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_DTYPE_NAMES = (
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "float8_e4m3fn",
    "float8_e5m2",
)
_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in _DTYPE_NAMES if hasattr(torch, name)}
_INT16_MAX_COLUMNS = 32768
_INT32_MAX = 2**31 - 1
_SAFETENSORS_MAX_HEADER = 100_000_000


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as error:
        raise ImportError(f"compressed checkpoints need the safetensors package: {_INSTALL_HINT}") from error
    return safetensors.torch


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _resolve_values_dtype(values_dtype: torch.dtype | str | None) -> torch.dtype | None:
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


def plain_state_dict(model_or_state_dict: StateDictLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the desparsified model, on the CPU, without touching the input.

    Pruned tensors become ``<name>`` holding the effective weight: ``<name>_orig`` with its ``<name>_threshold``
    exactly as :func:`adasparse.desparsify` would bake it, ``<name>_orig`` with a ``<name>_mask`` (fixed masks, as
    ``torch.nn.utils.prune`` stores them) as ``orig * mask``; thresholds and masks are dropped. Sparse-layout
    tensors are made dense. Keys keep the desparsified model's order.

    Args:
        model_or_state_dict: a sparsified or plain ``nn.Module``, or a (sparsified or plain) ``state_dict``.

    Returns:
        A new ``dict`` of detached CPU tensors.

    Example::

        >>> sd = plain_state_dict(sparsified_model)          # sparsified_model is left as it is
        >>> sd.keys() == desparsify(copy.deepcopy(sparsified_model)).state_dict().keys()
        True
    """
    if isinstance(model_or_state_dict, nn.Module):
        source: Mapping[str, Any] = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        source = model_or_state_dict
    else:
        raise TypeError(
            "model_or_state_dict must be an nn.Module or a state_dict mapping, "
            f"got {type(model_or_state_dict).__name__}"
        )
    result: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, tensor in source.items():
            if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"state_dict entries must map str to torch.Tensor; {key!r} holds {type(tensor).__name__}"
                )
            if is_companion_key(key, source):
                continue
            if key.endswith(ORIG_SUFFIX):
                base = key[: -len(ORIG_SUFFIX)]
                effective = effective_from_state(
                    tensor, source.get(base + THRESHOLD_SUFFIX), source.get(base + MASK_SUFFIX)
                )
                if effective is not None:
                    result[base] = effective.cpu()
                    continue
            tensor = tensor.detach()
            if tensor.layout != torch.strided:
                tensor = tensor.to_dense()
            result[key] = tensor.cpu()
    return result


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
            f"{name} has values beyond the range of {_dtype_name(values_dtype)} (largest magnitude "
            f"{values.abs().max().item():.4g}); use values_dtype=torch.bfloat16 or None"
        )
    return converted


def _encode(
    name: str, tensor: torch.Tensor, values_dtype: torch.dtype | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata entry and the stored tensors of one state_dict entry."""
    entry: dict[str, Any] = {"dtype": _dtype_name(tensor.dtype), "shape": list(tensor.shape)}
    if tensor.dtype not in _DTYPES.values():
        raise ValueError(f"{name} has dtype {tensor.dtype}, which safetensors cannot store")
    numel = tensor.numel()
    flat = tensor.reshape(-1)
    nonzero = flat != 0 if tensor.dtype in _COMPRESSIBLE else flat.view(_BITS_VIEW[flat.element_size()]) != 0
    nnz = int(nonzero.sum())
    entry.update(nnz=nnz, sparsity=1.0 - nnz / numel if numel else 0.0)
    if tensor.dtype not in _COMPRESSIBLE or numel == 0:
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


def save_sparse(
    model_or_state_dict: StateDictLike,
    path: str | Path,
    *,
    values_dtype: torch.dtype | str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a pruned model's weights as a compressed safetensors file, atomically.

    Every floating tensor is stored in the smallest of three encodings (dense; bitmask + non-zero values; CSR +
    values), compared on their payload bytes, ties going to the simpler one. Integer and boolean tensors are
    stored as they are. The file loads with :func:`load_sparse` (or any safetensors reader plus the format in
    this module's docstring).

    Args:
        model_or_state_dict: a sparsified model (its effective weights are stored, under the desparsified
            model's keys, without thresholds), a plain model with zeros baked in, or a ``state_dict``.
        path: the output file (conventionally ``*.safetensors``); written through a temporary file and a rename,
            so an existing file is replaced only by a complete new one.
        values_dtype: ``None`` (exact: values keep each tensor's dtype) or ``torch.float16`` /
            ``torch.bfloat16`` (also ``"fp16"``/``"bf16"``): floating values are stored in that type, halving
            their size. Lossy; values beyond float16's range raise ``ValueError``.
        metadata: JSON-serialisable information stored with the weights (e.g. the architecture or a run's
            ``config.json``); :func:`read_sparse_metadata` returns it under ``"metadata"``.

    Returns:
        The ``"adasparse"`` header written (format, versions, per-tensor encoding/shape/dtype/sparsity, metadata).

    Raises:
        ImportError: safetensors is not installed (``pip install "adasparse[export]"``).
        ValueError: bad ``values_dtype``, metadata that is not JSON-serialisable, an unstorable tensor.

    Example::

        >>> header = save_sparse(model, "pruned.safetensors", metadata={"model": "mlp"})
        >>> header["tensors"]["layers.1.weight"]["encoding"]
        'bitmask'
        >>> sd = load_sparse("pruned.safetensors")
    """
    st = _safetensors()
    resolved_dtype = _resolve_values_dtype(values_dtype)
    state = plain_state_dict(model_or_state_dict)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "adasparse": __version__,
        "torch": torch.__version__,
        "values_dtype": _dtype_name(resolved_dtype) if resolved_dtype is not None else None,
        "tensors": {},
        "metadata": dict(metadata) if metadata is not None else {},
    }
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        entry, tensors = _encode(name, tensor, resolved_dtype if tensor.dtype in _COMPRESSIBLE else None)
        for key in tensors:
            if key in stored:
                raise ValueError(f"stored tensor name {key!r} of {name!r} collides with another entry")
        header["tensors"][name] = entry
        stored.update(tensors)
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from error
    data = st.save(stored, metadata={METADATA_KEY: text})
    atomic_write_bytes(path, data)
    return header


def _parse_header(path: Path, data: bytes, file_size: int) -> dict[str, Any]:
    """The safetensors JSON header of a file whose first bytes are ``data`` (at least the header, if complete)."""
    if data[:4] == b"PK\x03\x04":
        raise ValueError(f"{path} is a torch.save (zip) file, not a safetensors file: load it with torch.load")
    if file_size < 8:
        raise ValueError(f"{path} is truncated or not a safetensors file ({file_size} bytes)")
    length = int.from_bytes(data[:8], "little")
    if length > _SAFETENSORS_MAX_HEADER or data[8:9] not in (b"{", b""):
        raise ValueError(f"{path} is not a safetensors file (bad header length or magic)")
    if length > file_size - 8:
        raise ValueError(f"{path} is truncated: its header needs {length} bytes, the file has {file_size - 8}")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a safetensors file (header is not JSON: {error})") from error
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    ends = [
        info["data_offsets"][1]
        for key, info in header.items()
        if key != "__metadata__" and isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
    ]
    payload = file_size - 8 - length
    if ends and max(ends) > payload:
        raise ValueError(f"{path} is truncated: its tensors need {max(ends)} bytes of data, the file has {payload}")
    return header


def _metadata_from_header(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path} has no {METADATA_KEY!r} metadata: it is a safetensors file not written by "
            "adasparse.save_sparse (read it with safetensors.torch.load_file)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata does not describe an {FORMAT} file")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses format version {version}; this adasparse ({__version__}) reads up to {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("tensors"), dict):
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata has no 'tensors' table")
    if not isinstance(meta.get("metadata", {}), dict):
        raise ValueError(f"{path}: the user 'metadata' entry must be a JSON object")
    return meta


def read_sparse_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"adasparse"`` header of a file written by :func:`save_sparse`, without decoding its tensors.

    Args:
        path: a ``.safetensors`` file written by :func:`save_sparse`.

    Returns:
        The header dict: ``format``, ``version``, ``adasparse``, ``torch``, ``values_dtype``, ``tensors`` (per
        tensor: ``encoding``, ``dtype``, ``shape``, ``nnz``, ``sparsity``, ``keys``) and the user ``metadata``.

    Raises:
        ValueError: a truncated file, not a safetensors file, or one without valid adasparse metadata.

    Example::

        >>> read_sparse_metadata("pruned.safetensors")["metadata"]["config"]["model"]
        'mlp'
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        head += handle.read(min(length, _SAFETENSORS_MAX_HEADER))
    return _metadata_from_header(path, _parse_header(path, head, path.stat().st_size))


def _shape(path: Path, name: str, entry: dict[str, Any]) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"{path}: tensor {name!r} has an invalid shape {shape!r} in the metadata")
    return tuple(shape)


def _stored(
    path: Path,
    name: str,
    tensors: dict[str, torch.Tensor],
    keys: dict[str, Any],
    part: str,
    dtypes: tuple[torch.dtype, ...],
    length: int | None = None,
) -> torch.Tensor:
    key = keys.get(part)
    if not isinstance(key, str) or key not in tensors:
        raise ValueError(f"{path}: tensor {name!r} lacks its stored part {part!r} ({key!r})")
    tensor = tensors[key]
    if tensor.dtype not in dtypes:
        allowed = ", ".join(_dtype_name(d) for d in dtypes)
        raise ValueError(f"{path}: {key!r} has dtype {_dtype_name(tensor.dtype)}, expected {allowed}")
    if length is not None and tuple(tensor.shape) != (length,):
        raise ValueError(f"{path}: {key!r} has shape {tuple(tensor.shape)}, expected ({length},)")
    if length is None and tensor.dim() != 1:
        raise ValueError(f"{path}: {key!r} must be 1-D, has shape {tuple(tensor.shape)}")
    return tensor


def _decode(path: Path, name: str, entry: Any, tensors: dict[str, torch.Tensor], values_dtype: Any) -> torch.Tensor:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: the metadata entry of {name!r} is not an object")
    encoding, dtype_name, keys = entry.get("encoding"), entry.get("dtype"), entry.get("keys")
    if encoding not in ENCODINGS:
        raise ValueError(f"{path}: tensor {name!r} has unknown encoding {encoding!r}")
    if dtype_name not in _DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unknown dtype {dtype_name!r}")
    if not isinstance(keys, dict):
        raise ValueError(f"{path}: tensor {name!r} has no 'keys' in the metadata")
    dtype = _DTYPES[dtype_name]
    shape = _shape(path, name, entry)
    numel = math.prod(shape)
    stored_dtypes = (dtype,) if dtype not in _COMPRESSIBLE or values_dtype is None else (_DTYPES[values_dtype],)
    if encoding == "dense":
        return _dense(path, name, keys, tensors, shape, stored_dtypes, dtype)
    if dtype not in _COMPRESSIBLE:
        raise ValueError(f"{path}: tensor {name!r} of dtype {dtype_name} cannot have encoding {encoding!r}")
    if encoding == "bitmask":
        mask_bytes = _stored(path, name, tensors, keys, "mask", (torch.uint8,), length=(numel + 7) // 8)
        bits = np.unpackbits(mask_bytes.numpy(), count=numel, bitorder="little").astype(bool)
        nonzero = torch.from_numpy(bits)
        values = _stored(path, name, tensors, keys, "values", stored_dtypes, length=int(nonzero.sum()))
        out = torch.zeros(numel, dtype=values.dtype)
        out[nonzero] = values
        return out.to(dtype).reshape(shape)
    if not shape:
        raise ValueError(f"{path}: tensor {name!r} is a scalar and cannot have encoding 'csr'")
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
    name: str,
    keys: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    stored_dtypes: tuple[torch.dtype, ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    key = keys.get("data")
    if not isinstance(key, str) or key not in tensors:
        raise ValueError(f"{path}: tensor {name!r} lacks its stored data ({key!r})")
    data = tensors[key]
    if data.dtype not in stored_dtypes:
        raise ValueError(
            f"{path}: {key!r} has dtype {_dtype_name(data.dtype)}, the metadata says "
            f"{', '.join(_dtype_name(d) for d in stored_dtypes)}"
        )
    if tuple(data.shape) != shape:
        raise ValueError(f"{path}: {key!r} has shape {tuple(data.shape)}, the metadata says {shape}")
    return data.to(dtype)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    st = _safetensors()
    data = path.read_bytes()
    meta = _metadata_from_header(path, _parse_header(path, data, len(data)))
    try:
        tensors = st.load(data)
    except Exception as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}") from error
    values_dtype = meta.get("values_dtype")
    if values_dtype is not None and values_dtype not in ("float16", "bfloat16"):
        raise ValueError(f"{path}: invalid values_dtype {values_dtype!r} in the metadata")
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name, entry in meta["tensors"].items():
        state[name] = _decode(path, name, entry, tensors, values_dtype)
        used.update(entry["keys"].values())
    unreferenced = sorted(set(tensors) - used)
    if unreferenced:
        raise ValueError(f"{path}: stored tensors not described by the metadata: {', '.join(unreferenced[:5])}")
    return meta, state


def load_sparse(path: str | Path, model: nn.Module | None = None) -> Any:
    """Read a file written by :func:`save_sparse`.

    Args:
        path: the ``.safetensors`` file.
        model: optional plain (not sparsified) model with the same architecture; the weights are loaded into it
            (strict: same keys, same shapes).

    Returns:
        The ``state_dict`` (CPU tensors, original dtypes, the desparsified model's keys in order) when ``model`` is
        ``None``, else ``model`` with the weights loaded.

    Raises:
        ImportError: safetensors is not installed.
        ValueError: naming the file: truncated, not a safetensors file, missing or invalid adasparse metadata,
            inconsistent encodings; with ``model``: missing or unexpected keys, or a shape mismatch (naming the key
            and both shapes), or a sparsified model.

    Example::

        >>> state = load_sparse("pruned.safetensors")
        >>> model = load_sparse("pruned.safetensors", MyNet())
    """
    path = Path(path)
    _, state = _read(path)
    if model is None:
        return state
    if pruned_tensors(model):
        raise ValueError(
            f"cannot load {path} into a sparsified model (its weights are <name>_orig + thresholds): "
            "load it into a plain model, or call adasparse.desparsify(model) first"
        )
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in the model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise ValueError(f"{path} does not match the model's keys ({'; '.join(parts)})")
    for key, tensor in state.items():
        target = expected[key]
        if tuple(target.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: {key} has shape {tuple(tensor.shape)} in the file but {tuple(target.shape)} in the model"
            )
        if target.layout != torch.strided:
            raise ValueError(
                f"cannot load {path} into {key}, a {target.layout} tensor: load the weights before "
                "adasparse.to_sparse_inference"
            )
    model.load_state_dict(state)
    return model


def dense_size(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Bytes ``torch.save`` writes for ``state_dict`` (the reference the size ratios are quoted against)."""
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.tell()


@dataclass(frozen=True)
class RunWeights:
    """A pruned model's weights found from a run directory or a checkpoint file.

    Attributes:
        state_dict: the desparsified model's ``state_dict`` (effective weights, no thresholds).
        source: the file the weights came from.
        run_config: the contents of the run's ``config.json`` (``None`` when there is none beside the file).
    """

    state_dict: dict[str, torch.Tensor]
    source: Path
    run_config: dict[str, Any] | None

    def build_model(self) -> nn.Module:
        """Rebuild the run's architecture with :func:`adasparse.models.create_model` and load the weights.

        Raises:
            ValueError: no ``config.json``, or one without the model name, ``num_classes`` or ``input_shape``.
        """
        from .models import create_model

        name, num_classes, input_shape = self._architecture()
        model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as error:
            raise ValueError(f"{self.source} does not fit the {name!r} architecture: {error}") from error
        return model.eval()

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero input of the run's ``input_shape`` with a leading batch dimension."""
        _, _, input_shape = self._architecture()
        return torch.zeros(batch_size, *input_shape)

    def _architecture(self) -> tuple[str, int, tuple[int, ...]]:
        config = self.run_config or {}
        name = (config.get("config") or {}).get("model")
        dataset = config.get("dataset") or {}
        num_classes, input_shape = dataset.get("num_classes"), dataset.get("input_shape")
        if self.run_config is None:
            raise ValueError(
                f"{self.source}: rebuilding the architecture needs the run's config.json beside it (none found)"
            )
        if not isinstance(name, str) or not isinstance(num_classes, int) or not isinstance(input_shape, list):
            raise ValueError(
                f"{self.source.parent / 'config.json'} lacks the model name, dataset.num_classes or "
                "dataset.input_shape (written by an older adasparse?): cannot rebuild the architecture"
            )
        return name, num_classes, tuple(int(d) for d in input_shape)


def load_run_weights(path: str | Path) -> RunWeights:
    """The pruned weights of a run directory, an adasparse ``checkpoint.pt``, or a saved ``state_dict``.

    A run directory gives its ``model_sparse.pt`` if present, else the model in its ``checkpoint.pt`` (effective
    weights of the sparsified model). A file's ``config.json`` is looked for in its directory.

    Args:
        path: a run directory, ``checkpoint.pt``, ``model_sparse.pt`` or any ``torch.save``-d ``state_dict``.

    Returns:
        A :class:`RunWeights`.

    Raises:
        ValueError: nothing loadable at ``path`` (naming it).

    Example::

        >>> weights = load_run_weights("runs/20261128-233501")
        >>> model = weights.build_model()
    """
    from .train import RUN_FORMAT

    state, path = read_weights_file(path)
    run_config = None
    config_path = path.parent / "config.json"
    if config_path.is_file():
        try:
            data = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_path} is not readable JSON: {error}") from error
        if isinstance(data, dict) and data.get("format") == RUN_FORMAT:
            run_config = data
    return RunWeights(plain_state_dict(state), path, run_config)


def read_weights_file(path: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The ``state_dict`` in a run directory (its ``model_sparse.pt``, else its ``checkpoint.pt``), an adasparse
    checkpoint (its model) or a ``torch.save``-d ``state_dict``, loaded with ``weights_only=True``; and the file.

    Raises:
        ValueError: a missing path, an unreadable or hostile file, or one that holds no ``state_dict``.
    """
    from .train import CHECKPOINT_FORMAT

    path = Path(path)
    if path.is_dir():
        for name in ("model_sparse.pt", "checkpoint.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ValueError(f"{path} holds neither model_sparse.pt nor checkpoint.pt")
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - one line for any unreadable file
        raise ValueError(f"{path} is not a readable PyTorch file: {str(error).splitlines()[0]}") from error
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state.get("model")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return state, path


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote: the file, its size and the size of the dense ``torch.save`` reference."""

    path: Path
    bytes: int
    dense_bytes: int

    @property
    def ratio(self) -> float:
        """File size over the dense model's ``torch.save`` size."""
        return self.bytes / self.dense_bytes if self.dense_bytes else float("nan")


def export_run(
    path: str | Path,
    *,
    format: str = "sparse",
    out: str | Path | None = None,
    values_dtype: torch.dtype | str | None = None,
) -> ExportResult:
    """Export a run's (or checkpoint's) pruned model: compressed safetensors or ONNX (what ``adasparse export`` does).

    Args:
        path: run directory, ``checkpoint.pt`` or ``model_sparse.pt`` (see :func:`load_run_weights`).
        format: ``"sparse"`` (:func:`save_sparse`, the run's ``config.json`` as metadata) or ``"onnx"``
            (:func:`adasparse.export_onnx` of the rebuilt architecture; needs ``config.json``).
        out: output file; default ``model_sparse.safetensors`` / ``model.onnx`` beside the weights.
        values_dtype: for ``"sparse"``: ``None`` (exact) or float16/bfloat16 values (lossy); for ``"onnx"`` the
            float16 export is not offered and a non-``None`` value is an error.

    Returns:
        An :class:`ExportResult` (path, size, size of the dense ``torch.save`` of the same weights).

    Example::

        >>> result = export_run("runs/20261128-233501", format="sparse", values_dtype="fp16")
        >>> print(result.path, f"{result.ratio:.3f}x")
    """
    if format not in ("sparse", "onnx"):
        raise ValueError(f"format must be 'sparse' or 'onnx', got {format!r}")
    weights = load_run_weights(path)
    default_name = "model_sparse.safetensors" if format == "sparse" else "model.onnx"
    target = Path(out) if out is not None else weights.source.parent / default_name
    if target.resolve() == weights.source.resolve():
        raise ValueError(f"--out {target} would overwrite the weights it exports")
    dense_state = {key: (t.float() if t.is_floating_point() else t) for key, t in weights.state_dict.items()}
    if format == "sparse":
        metadata = weights.run_config or {}
        save_sparse(weights.state_dict, target, values_dtype=values_dtype, metadata=metadata)
    else:
        if values_dtype is not None:
            raise ValueError("float16 values are only available for the sparse format")
        from .onnx_export import export_onnx

        export_onnx(weights.build_model(), weights.example_input(), target)
    return ExportResult(target, target.stat().st_size, dense_size(dense_state))
