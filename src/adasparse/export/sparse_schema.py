"""What a file in the sparse format may hold, checked before anything is decoded: the format's constants, the
safetensors header (parsed and checked against the safetensors schema), the ``"adasparse"`` metadata and its tensor
entries, and the size and model checks an untrusted file must pass. The format itself: :mod:`.sparse`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__

__all__ = [
    "COMPRESSIBLE",
    "DEFAULT_MAX_BYTES",
    "DTYPES",
    "ENCODINGS",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "Entry",
    "check_against_model",
    "check_max_bytes",
    "check_size",
    "dtype_name",
    "parse_header",
    "read_header",
    "shape_mismatch",
]

FORMAT = "adasparse.sparse"
FORMAT_VERSION = 1
METADATA_KEY = "adasparse"
ENCODINGS = ("dense", "bitmask", "csr")
COMPRESSIBLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
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
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in _DTYPE_NAMES if hasattr(torch, name)}
_INT64_MAX = 2**63 - 1
_SAFETENSORS_MAX_HEADER = 100_000_000
_SAFETENSORS_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
DEFAULT_MAX_BYTES = 2 * 1024**3
"""What :func:`~.sparse.load_sparse` may allocate without a model unless the caller raises it: 2 GiB of tensors."""


def dtype_name(dtype: torch.dtype) -> str:
    """The name the format records for ``dtype``: ``torch.float32`` -> ``"float32"``."""
    return str(dtype).replace("torch.", "")


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


def parse_header(path: Path, data: bytes, file_size: int) -> dict[str, Any]:
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
class Entry:
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


def _entry(path: Path, name: str, entry: Any) -> Entry:
    field = f"field tensors.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {field} must be an object, got {_short(entry)}")
    encoding, dtype_name, keys = entry.get("encoding"), entry.get("dtype"), entry.get("keys")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ValueError(
            f"{path}: tensor {name!r} has unknown encoding {_short(encoding)} ({field}.encoding must be one of "
            f"{', '.join(ENCODINGS)})"
        )
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has unknown dtype {_short(dtype_name)} ({field}.dtype)")
    dtype = DTYPES[dtype_name]
    if encoding != "dense" and dtype not in COMPRESSIBLE:
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
    return Entry(encoding, dtype, shape, dict(keys))


def _metadata_from_header(path: Path, header: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Entry]]:
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


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Entry], int]:
    """The safetensors header, the adasparse metadata, its entries and the file size, reading only the header."""
    with path.open("rb") as handle:
        file_size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        head += handle.read(min(length, _SAFETENSORS_MAX_HEADER))
    header = parse_header(path, head, file_size)
    meta, entries = _metadata_from_header(path, header)
    return header, meta, entries, file_size


def check_max_bytes(max_bytes: Any) -> None:
    """``max_bytes`` must be ``None`` or an integer >= 0 (``TypeError``, ``ValueError``)."""
    if max_bytes is None:
        return
    if not _is_int(max_bytes):
        raise TypeError(f"max_bytes must be None or an integer, got {type(max_bytes).__name__} {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 (or None for no limit), got {max_bytes!r}")


def check_size(path: Path, entries: dict[str, Entry], file_size: int, max_bytes: int | None) -> None:
    """Refuse a file whose tensors (or the file itself) are larger than ``max_bytes``, before reading them."""
    total = sum(entry.nbytes for entry in entries.values())
    if max_bytes is None or max(total, file_size) <= max_bytes:
        return
    if total >= file_size:
        largest = max(entries, key=lambda name: entries[name].nbytes)
        entry = entries[largest]
        what = f"its tensors need {total:,} bytes (largest: {largest!r}, {list(entry.shape)} {dtype_name(entry.dtype)})"
    else:
        what = f"it has {file_size:,} bytes"
    raise ValueError(
        f"{path}: {what}, more than max_bytes={max_bytes:,}: pass a larger max_bytes (or None) if you trust the "
        "file, or a model to load it into"
    )


def shape_mismatch(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, torch.Tensor], model: str) -> str:
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


def check_against_model(path: Path, entries: dict[str, Entry], expected: Mapping[str, torch.Tensor]) -> None:
    """The file's declared keys and shapes must be the model's (checked before anything is decoded)."""
    problem = shape_mismatch({key: entry.shape for key, entry in entries.items()}, expected, "the model")
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
