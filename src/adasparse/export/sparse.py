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

Length: about 760 lines, over the ~400 the project aims at: writer and reader of the format are kept together so
each encoding and its validation against hostile files are defined in one place; most of the length is the reader's
checks.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..core._io import atomic_write_bytes
from ..core.parametrization import pruned_tensors
from ..core.state_keys import (
    CENTRED_SUFFIX,
    MASK_SUFFIX,
    ORIG_SUFFIX,
    THRESHOLD_SUFFIX,
    effective_from_state,
    is_companion_key,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENCODINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "dense_size",
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
_INT64_MAX = 2**63 - 1
_SAFETENSORS_MAX_HEADER = 100_000_000
_SAFETENSORS_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
DEFAULT_MAX_BYTES = 2 * 1024**3
"""What :func:`load_sparse` may allocate without a model unless the caller raises it: 2 GiB of tensors."""


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
                    tensor,
                    source.get(base + THRESHOLD_SUFFIX),
                    source.get(base + MASK_SUFFIX),
                    source.get(base + CENTRED_SUFFIX),
                    name=base,
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_shape(path: Path, field: str, shape: Any) -> tuple[int, ...]:
    """A shape: a list of integers >= 0 whose product a tensor can hold."""
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ValueError(f"{path}: invalid shape {_short(shape)}: {field} must be a list of integers >= 0")
    if math.prod(shape) > _INT64_MAX:
        raise ValueError(f"{path}: invalid shape {_short(shape)}: {field} has more elements than a tensor can hold")
    return tuple(shape)


def _parse_header(path: Path, data: bytes, file_size: int) -> dict[str, Any]:
    """The safetensors JSON header of a file whose first bytes are ``data`` (at least the header, if complete).

    Checks it against the safetensors schema: ``__metadata__`` an object of strings; every other entry an object
    with a string ``dtype``, a ``shape`` (integers >= 0) and ``data_offsets`` ``[begin, end]`` inside the file's
    data, of the size the shape and dtype need.
    """
    if data[:4] == b"PK\x03\x04":
        raise ValueError(f"{path} is a torch.save (zip) file, not a safetensors file: load it with torch.load")
    if file_size < 8:
        raise ValueError(f"{path} is truncated or not a safetensors file ({file_size} bytes)")
    length = int.from_bytes(data[:8], "little")
    if not 2 <= length <= _SAFETENSORS_MAX_HEADER or data[8:9] not in (b"{", b""):
        raise ValueError(f"{path} is not a safetensors file (bad header length or magic)")
    if length > file_size - 8:
        raise ValueError(f"{path} is truncated: its header needs {length} bytes, the file has {file_size - 8}")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a safetensors file (header is not JSON: {error})") from error
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (header is not a JSON object)")
    payload = file_size - 8 - length
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise ValueError(
                    f"{path}: header field '__metadata__' must be an object of strings, got {_short(info)}"
                )
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(
                f"{path}: header field {key!r} must be an object with dtype, shape and data_offsets, got {_short(info)}"
            )
        if not isinstance(info["dtype"], str):
            raise ValueError(f"{path}: header field {key!r}.dtype must be a string, got {_short(info['dtype'])}")
        shape = _check_shape(path, f"header field {key!r}.shape", info["shape"])
        offsets = info["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ValueError(
                f"{path}: header field {key!r}.data_offsets must be [begin, end] with 0 <= begin <= end, "
                f"got {_short(offsets)}"
            )
        if offsets[1] > payload:
            raise ValueError(
                f"{path} is truncated: header field {key!r}.data_offsets needs {offsets[1]} bytes of data, the file "
                f"has {payload}"
            )
        size = _SAFETENSORS_DTYPE_SIZES.get(info["dtype"])
        if size is not None and offsets[1] - offsets[0] != math.prod(shape) * size:
            raise ValueError(
                f"{path}: header field {key!r}.data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, its "
                f"shape {list(shape)} of {info['dtype']} needs {math.prod(shape) * size}"
            )
    return header


@dataclass(frozen=True)
class _Entry:
    """One validated entry of the ``"tensors"`` table."""

    encoding: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    keys: dict[str, str]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


_PARTS = {"dense": ("data",), "bitmask": ("mask", "values"), "csr": ("indptr", "indices", "values")}


def _entry(path: Path, name: str, entry: Any) -> _Entry:
    field = f"field tensors.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {field} must be an object, got {_short(entry)}")
    encoding, dtype_name, keys = entry.get("encoding"), entry.get("dtype"), entry.get("keys")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ValueError(
            f"{path}: tensor {name!r} has unknown encoding {_short(encoding)} ({field}.encoding must be one of "
            f"{', '.join(ENCODINGS)})"
        )
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unknown dtype {_short(dtype_name)} ({field}.dtype)")
    dtype = _DTYPES[dtype_name]
    if encoding != "dense" and dtype not in _COMPRESSIBLE:
        raise ValueError(f"{path}: tensor {name!r} of dtype {dtype_name} cannot have encoding {encoding!r}")
    shape = _check_shape(path, f"{field}.shape", entry.get("shape"))
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{path}: {field}.keys must be an object of stored tensor names, got {_short(keys)}")
    parts = _PARTS[encoding]
    for part in parts:
        if part not in keys:
            what = "stored data" if encoding == "dense" else f"stored part {part!r}"
            raise ValueError(f"{path}: tensor {name!r} lacks its {what} ({field}.keys has no {part!r})")
    extra = sorted(set(keys) - set(parts))
    if extra:
        raise ValueError(f"{path}: {field}.keys has parts {extra} that encoding {encoding!r} does not use")
    if encoding == "csr" and not shape:
        raise ValueError(f"{path}: tensor {name!r} is a scalar and cannot have encoding 'csr'")
    return _Entry(encoding, dtype, shape, dict(keys))


def _metadata_from_header(path: Path, header: dict[str, Any]) -> tuple[dict[str, Any], dict[str, _Entry]]:
    """The ``"adasparse"`` metadata of a parsed header and its validated tensor entries."""
    raw = header.get("__metadata__", {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path} has no {METADATA_KEY!r} metadata: it is a safetensors file not written by "
            "adasparse.save_sparse (read it with safetensors.torch.load_file)"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata must be a JSON object, got {_short(meta)}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata does not describe an {FORMAT} file")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise ValueError(f"{path}: invalid format version {_short(version)} (field version)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses format version {version}; this adasparse ({__version__}) reads up to {FORMAT_VERSION}"
        )
    if not isinstance(meta.get("tensors"), dict):
        raise ValueError(f"{path}: the {METADATA_KEY!r} metadata has no 'tensors' table (field tensors)")
    if not isinstance(meta.get("metadata", {}), dict):
        raise ValueError(f"{path}: the user 'metadata' entry must be a JSON object, got {_short(meta['metadata'])}")
    values_dtype = meta.get("values_dtype")
    if values_dtype is not None and (not isinstance(values_dtype, str) or values_dtype not in ("float16", "bfloat16")):
        raise ValueError(
            f"{path}: invalid values_dtype {_short(values_dtype)} in the metadata (null, float16, bfloat16)"
        )
    entries = {name: _entry(path, name, entry) for name, entry in meta["tensors"].items()}
    return meta, entries


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, _Entry], int]:
    """The safetensors header, the adasparse metadata, its entries and the file size, reading only the header."""
    with path.open("rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        head += handle.read(min(length, _SAFETENSORS_MAX_HEADER))
    header = _parse_header(path, head, file_size)
    meta, entries = _metadata_from_header(path, header)
    return header, meta, entries, file_size


def read_sparse_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"adasparse"`` header of a file written by :func:`save_sparse`, without decoding its tensors.

    Args:
        path: a ``.safetensors`` file written by :func:`save_sparse`.

    Returns:
        The header dict: ``format``, ``version``, ``adasparse``, ``torch``, ``values_dtype``, ``tensors`` (per
        tensor: ``encoding``, ``dtype``, ``shape``, ``nnz``, ``sparsity``, ``keys``) and the user ``metadata``.

    Raises:
        ValueError: a truncated file, not a safetensors file, or one without valid adasparse metadata (naming the
            file and the field).

    Example::

        >>> read_sparse_metadata("pruned.safetensors")["metadata"]["config"]["model"]
        'mlp'
    """
    return _read_header(Path(path))[1]


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
        allowed = ", ".join(_dtype_name(d) for d in dtypes)
        raise ValueError(f"{path}: {key!r} has dtype {_dtype_name(tensor.dtype)}, expected {allowed}")
    if length is not None and tuple(tensor.shape) != (length,):
        raise ValueError(f"{path}: {key!r} has shape {tuple(tensor.shape)}, expected ({length},)")
    if length is None and tensor.dim() != 1:
        raise ValueError(f"{path}: {key!r} must be 1-D, has shape {tuple(tensor.shape)}")
    return tensor


def _decode(
    path: Path, name: str, entry: _Entry, tensors: dict[str, torch.Tensor], values_dtype: str | None
) -> torch.Tensor:
    dtype, shape, keys, numel = entry.dtype, entry.shape, entry.keys, entry.numel
    stored_dtypes = (dtype,) if dtype not in _COMPRESSIBLE or values_dtype is None else (_DTYPES[values_dtype],)
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
            f"{path}: {key!r} has dtype {_dtype_name(data.dtype)}, the metadata says "
            f"{', '.join(_dtype_name(d) for d in stored_dtypes)}"
        )
    if tuple(data.shape) != shape:
        raise ValueError(f"{path}: {key!r} has shape {tuple(data.shape)}, the metadata says {shape}")
    return data.to(dtype)


def _check_max_bytes(max_bytes: Any) -> None:
    if max_bytes is None:
        return
    if not _is_int(max_bytes):
        raise TypeError(f"max_bytes must be None or an integer, got {type(max_bytes).__name__} {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 (or None for no limit), got {max_bytes!r}")


def _check_size(path: Path, entries: dict[str, _Entry], file_size: int, max_bytes: int | None) -> None:
    """Refuse a file whose tensors (or the file itself) are larger than ``max_bytes``, before reading them."""
    total = sum(entry.nbytes for entry in entries.values())
    if max_bytes is None or max(total, file_size) <= max_bytes:
        return
    if total >= file_size:
        largest = max(entries, key=lambda name: entries[name].nbytes)
        entry = entries[largest]
        what = (
            f"its tensors need {total:,} bytes (largest: {largest!r}, {list(entry.shape)} {_dtype_name(entry.dtype)})"
        )
    else:
        what = f"it has {file_size:,} bytes"
    raise ValueError(
        f"{path}: {what}, more than max_bytes={max_bytes:,}: pass a larger max_bytes (or None) if you trust the "
        "file, or a model to load it into"
    )


def _shape_mismatch(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, torch.Tensor], model: str) -> str:
    """How the keys and shapes of a file (``shapes``) differ from a model's ``state_dict``; ``""`` if they do not."""
    missing = [key for key in expected if key not in shapes]
    unexpected = [key for key in shapes if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing from the file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in {model}: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        return "; ".join(parts)
    for key, shape in shapes.items():
        target = tuple(expected[key].shape)
        if target != shape:
            return f"{key} has shape {shape} in the file but {target} in {model}"
    return ""


def _check_against_model(path: Path, entries: dict[str, _Entry], expected: Mapping[str, torch.Tensor]) -> None:
    """The file's declared keys and shapes must be the model's (checked before anything is decoded)."""
    problem = _shape_mismatch({key: entry.shape for key, entry in entries.items()}, expected, "the model")
    if " has shape " in problem:
        raise ValueError(f"{path}: {problem}")
    if problem:
        raise ValueError(f"{path} does not match the model's keys ({problem})")
    for key in entries:
        target = expected[key]
        if target.layout != torch.strided:
            raise ValueError(
                f"cannot load {path} into {key}, a {target.layout} tensor: load the weights before "
                "adasparse.to_sparse_inference"
            )


def _read(
    path: Path, *, expected: Mapping[str, torch.Tensor] | None, max_bytes: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    st = _safetensors()
    header, meta, entries, file_size = _read_header(path)
    stored = {key for key in header if key != "__metadata__"}
    used: set[str] = set()
    for name, entry in entries.items():
        for part, key in entry.keys.items():
            if key not in stored:
                what = "stored data" if part == "data" else f"stored part {part!r}"
                raise ValueError(f"{path}: tensor {name!r} lacks its {what} ({key!r})")
        used.update(entry.keys.values())
    unreferenced = sorted(stored - used)
    if unreferenced:
        raise ValueError(f"{path}: stored tensors not described by the metadata: {', '.join(unreferenced[:5])}")
    if expected is not None:
        _check_against_model(path, entries, expected)
    else:
        _check_size(path, entries, file_size, max_bytes)
    data = path.read_bytes()
    if len(data) != file_size or _parse_header(path, data, file_size) != header:
        raise ValueError(f"{path} changed while it was being read")
    try:
        tensors = st.load(data)
    except Exception as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}") from error
    if set(tensors) != stored:
        raise ValueError(f"{path} changed while it was being read")
    values_dtype = meta.get("values_dtype")
    state = {name: _decode(path, name, entry, tensors, values_dtype) for name, entry in entries.items()}
    return meta, state


def load_sparse(path: str | Path, model: nn.Module | None = None, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Any:
    """Read a file written by :func:`save_sparse`.

    What the load may allocate is decided from the header, before any tensor is read: with ``model``, every
    declared key and shape must be the model's; without one, the tensors' dense size (and the file's size) must
    not exceed ``max_bytes``.

    Args:
        path: the ``.safetensors`` file.
        model: optional plain (not sparsified) model with the same architecture; the weights are loaded into it
            (strict: same keys, same shapes).
        max_bytes: without ``model``, the largest total size in bytes of the tensors the file may declare
            (elements times element size, summed); default :data:`DEFAULT_MAX_BYTES` (2 GiB), ``None`` for no
            limit. Decoding briefly needs up to about twice this. Ignored with ``model``, whose shapes bound the
            load.

    Returns:
        The ``state_dict`` (CPU tensors, original dtypes, the desparsified model's keys in order) when ``model`` is
        ``None``, else ``model`` with the weights loaded.

    Raises:
        ImportError: safetensors is not installed.
        TypeError: ``max_bytes`` is not an integer or ``None``.
        ValueError: naming the file: truncated, not a safetensors file, a header field that does not fit the format
            (naming the field), inconsistent encodings, tensors larger than ``max_bytes``; with ``model``: missing or
            unexpected keys, or a shape mismatch (naming the key and both shapes), or a sparsified model.

    Example::

        >>> state = load_sparse("pruned.safetensors")
        >>> model = load_sparse("pruned.safetensors", MyNet())
        >>> state = load_sparse("large.safetensors", max_bytes=16 * 2**30)   # a trusted 16 GiB model
    """
    path = Path(path)
    _check_max_bytes(max_bytes)
    if model is None:
        _, state = _read(path, expected=None, max_bytes=max_bytes)
        return state
    if pruned_tensors(model):
        raise ValueError(
            f"cannot load {path} into a sparsified model (its weights are <name>_orig + thresholds): "
            "load it into a plain model, or call adasparse.desparsify(model) first"
        )
    _, state = _read(path, expected=model.state_dict(), max_bytes=max_bytes)
    model.load_state_dict(state)
    return model


def dense_size(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Bytes ``torch.save`` writes for ``state_dict`` (the reference the size ratios are quoted against)."""
    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.tell()
