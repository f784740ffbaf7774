"""The checks a sparse file passes before it is decoded (export/sparse_schema.py), called directly; through
load_sparse on hand-made files: tests/reliability/test_untrusted_files.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adasparse.export.sparse_schema import (
    Entry,
    check_against_model,
    check_max_bytes,
    check_size,
    parse_header,
    shape_mismatch,
)

PATH = Path("m.safetensors")


def _bytes(header: dict, payload: int) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text, 8 + len(text) + payload


def test_parse_header_checks_the_safetensors_schema() -> None:
    header = {"__metadata__": {"k": "v"}, "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    assert parse_header(PATH, *_bytes(header, 24)) == header
    with pytest.raises(ValueError, match=r"m\.safetensors is truncated: header field 'w'\.data_offsets needs 24"):
        parse_header(PATH, *_bytes(header, 23))
    header["w"]["shape"] = [2, 2]
    with pytest.raises(ValueError, match=r"span 24 bytes, its shape \[2, 2\] of F32 needs 16"):
        parse_header(PATH, *_bytes(header, 24))
    with pytest.raises(ValueError, match="'__metadata__' must be an object of strings"):
        parse_header(PATH, *_bytes({"__metadata__": {"k": 1}}, 0))
    with pytest.raises(ValueError, match=r"torch\.save \(zip\) file"):
        parse_header(PATH, b"PK\x03\x04" + b"\0" * 60, 64)


def test_entry_sizes_and_the_size_limit() -> None:
    entries = {"a": Entry("csr", torch.float32, (1000, 1000), {}), "b": Entry("dense", torch.int64, (10,), {})}
    assert entries["a"].numel == 10**6 and entries["b"].nbytes == 80
    check_size(PATH, entries, 500, 4 * 10**6 + 80)
    check_size(PATH, entries, 500, None)
    with pytest.raises(ValueError, match=r"its tensors need 4,000,080 bytes \(largest: 'a', \[1000, 1000\] float32\)"):
        check_size(PATH, entries, 500, 10**6)
    with pytest.raises(ValueError, match="it has 9,000,000 bytes, more than max_bytes=5,000,000"):
        check_size(PATH, entries, 9 * 10**6, 5 * 10**6)


def test_max_bytes_is_none_or_a_non_negative_integer() -> None:
    check_max_bytes(None)
    check_max_bytes(0)
    with pytest.raises(TypeError, match="max_bytes must be None or an integer, got bool True"):
        check_max_bytes(True)
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        check_max_bytes(-1)


def test_keys_and_shapes_against_a_model() -> None:
    expected = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
    assert shape_mismatch({"w": (2, 3), "b": (2,)}, expected, "the model") == ""
    assert shape_mismatch({"w": (2, 3)}, expected, "the model") == "missing from the file: b"
    assert shape_mismatch({"w": (2, 3), "b": (2,), "x": (1,)}, expected, "mlp") == "not in mlp: x"
    assert (
        shape_mismatch({"w": (3, 2), "b": (2,)}, expected, "mlp") == "w has shape (3, 2) in the file but (2, 3) in mlp"
    )
    entries = {"w": Entry("dense", torch.float32, (3, 2), {}), "b": Entry("dense", torch.float32, (2,), {})}
    with pytest.raises(ValueError, match=r"^m\.safetensors: w has shape \(3, 2\) in the file"):
        check_against_model(PATH, entries, expected)
    with pytest.raises(ValueError, match=r"does not match the model's keys \(missing from the file: b\)"):
        check_against_model(PATH, {"w": entries["w"]}, expected)
