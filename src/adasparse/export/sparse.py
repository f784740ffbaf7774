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

The checks a file must pass before it is decoded are in :mod:`.sparse_schema`, the encoding and decoding of one
tensor in :mod:`.sparse_codec`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

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
from .sparse_codec import decode, encode, resolve_values_dtype
from .sparse_schema import (
    COMPRESSIBLE,
    DEFAULT_MAX_BYTES,
    ENCODINGS,
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    check_against_model,
    check_max_bytes,
    check_size,
    dtype_name,
    parse_header,
    read_header,
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

StateDictLike = Union[nn.Module, Mapping[str, torch.Tensor]]
_INSTALL_HINT = 'pip install "adasparse[export]"'


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as error:
        raise ImportError(f"compressed checkpoints need the safetensors package: {_INSTALL_HINT}") from error
    return safetensors.torch


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
    resolved_dtype = resolve_values_dtype(values_dtype)
    state = plain_state_dict(model_or_state_dict)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "adasparse": __version__,
        "torch": torch.__version__,
        "values_dtype": dtype_name(resolved_dtype) if resolved_dtype is not None else None,
        "tensors": {},
        "metadata": dict(metadata) if metadata is not None else {},
    }
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        entry, tensors = encode(name, tensor, resolved_dtype if tensor.dtype in COMPRESSIBLE else None)
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
    return read_header(Path(path))[1]


def _read(
    path: Path, *, expected: Mapping[str, torch.Tensor] | None, max_bytes: int | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    st = _safetensors()
    header, meta, entries, file_size = read_header(path)
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
        check_against_model(path, entries, expected)
    else:
        check_size(path, entries, file_size, max_bytes)
    data = path.read_bytes()
    if len(data) != file_size or parse_header(path, data, file_size) != header:
        raise ValueError(f"{path} changed while it was being read")
    try:
        tensors = st.load(data)
    except Exception as error:
        raise ValueError(f"{path} is not a valid safetensors file: {error}") from error
    if set(tensors) != stored:
        raise ValueError(f"{path} changed while it was being read")
    values_dtype = meta.get("values_dtype")
    state = {name: decode(path, name, entry, tensors, values_dtype) for name, entry in entries.items()}
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
    check_max_bytes(max_bytes)
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
