"""Hand-made safetensors files: every structural problem is a ValueError naming the file and the field, and a load
allocates nothing beyond what the caller allowed (the model's shapes, or ``max_bytes``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from adasparse.export import DEFAULT_MAX_BYTES, load_sparse, read_sparse_metadata, save_sparse

pytest.importorskip("safetensors")


def _file(path: Path, header: dict[str, Any], payload: bytes = b"") -> Path:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)
    return path


def _meta(tensors: dict[str, Any], **fields: Any) -> dict[str, Any]:
    meta = {"format": "adasparse.sparse", "version": 1, "values_dtype": None, "tensors": tensors, "metadata": {}}
    return {"__metadata__": {"adasparse": json.dumps({**meta, **fields})}}


DENSE = {"w": {"encoding": "dense", "dtype": "float32", "shape": [2], "keys": {"data": "w"}}}
STORED = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def _csr(shape: list[int]) -> tuple[dict[str, Any], bytes]:
    """A CSR tensor of ``shape`` with no values: a few hundred bytes whatever the shape."""
    rows = shape[0]
    entry = {
        "encoding": "csr",
        "dtype": "float32",
        "shape": shape,
        "keys": {"indptr": "p", "indices": "i", "values": "v"},
    }
    header = {
        **_meta({"w": entry}),
        "p": {"dtype": "I32", "shape": [rows + 1], "data_offsets": [0, 4 * (rows + 1)]},
        "i": {"dtype": "I16", "shape": [0], "data_offsets": [4 * (rows + 1), 4 * (rows + 1)]},
        "v": {"dtype": "F32", "shape": [0], "data_offsets": [4 * (rows + 1), 4 * (rows + 1)]},
    }
    return header, b"\0" * (4 * (rows + 1))


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "offsets_empty": ({**_meta(DENSE), "w": {**STORED["w"], "data_offsets": []}}, "data_offsets"),
    "offsets_string": ({**_meta(DENSE), "w": {**STORED["w"], "data_offsets": [0, "8"]}}, "data_offsets"),
    "offsets_reversed": ({**_meta(DENSE), "w": {**STORED["w"], "data_offsets": [8, 0]}}, "data_offsets"),
    "offsets_size": ({**_meta(DENSE), "w": {**STORED["w"], "data_offsets": [0, 4]}}, "data_offsets"),
    "offsets_huge": ({**_meta(DENSE), "w": {**STORED["w"], "data_offsets": [0, 2**70]}}, "data_offsets"),
    "stored_not_object": ({**_meta(DENSE), "w": [1, 2]}, "'w'"),
    "stored_shape": ({**_meta(DENSE), "w": {**STORED["w"], "shape": ["2"]}}, "shape"),
    "stored_dtype": ({**_meta(DENSE), "w": {**STORED["w"], "dtype": 4}}, "dtype"),
    "metadata_list": ({"__metadata__": ["x"], **STORED}, "__metadata__"),
    "metadata_value_list": ({"__metadata__": {"adasparse": ["x"]}, **STORED}, "adasparse"),
    "meta_not_object": ({"__metadata__": {"adasparse": "[1]"}, **STORED}, "adasparse"),
    "tensors_list": ({**_meta(["w"]), **STORED}, "tensors"),
    "entry_not_object": ({**_meta({"w": "dense"}), **STORED}, "tensors.w"),
    "keys_list": ({**_meta({"w": {**DENSE["w"], "keys": ["w"]}}), **STORED}, "tensors.w.keys"),
    "key_value_list": ({**_meta({"w": {**DENSE["w"], "keys": {"data": ["w"]}}}), **STORED}, "tensors.w.keys"),
    "key_extra_part": ({**_meta({"w": {**DENSE["w"], "keys": {"data": "w", "mask": "w"}}}), **STORED}, "keys"),
    "shape_overflow": ({**_meta({"w": {**DENSE["w"], "shape": [2**62, 2**62]}}), **STORED}, "tensors.w.shape"),
    "shape_float": ({**_meta({"w": {**DENSE["w"], "shape": [2.0]}}), **STORED}, "tensors.w.shape"),
    "shape_bool": ({**_meta({"w": {**DENSE["w"], "shape": [True, 2]}}), **STORED}, "tensors.w.shape"),
    "dtype_list": ({**_meta({"w": {**DENSE["w"], "dtype": ["float32"]}}), **STORED}, "tensors.w.dtype"),
    "encoding_list": ({**_meta({"w": {**DENSE["w"], "encoding": ["dense"]}}), **STORED}, "tensors.w.encoding"),
    "values_dtype_list": ({**_meta(DENSE, values_dtype=["float16"]), **STORED}, "values_dtype"),
    "version_float": ({**_meta(DENSE, version=1.0), **STORED}, "version"),
    "user_metadata_list": ({**_meta(DENSE, metadata=[1]), **STORED}, "metadata"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_header_fields_are_value_errors_naming_file_and_field(tmp_path: Path, case: str) -> None:
    header, field = MALFORMED[case]
    path = _file(tmp_path / "bad.safetensors", header, b"\0" * 8)
    for read in (load_sparse, read_sparse_metadata):
        with pytest.raises(ValueError) as error:
            read(path)
        message = str(error.value)
        assert "bad.safetensors" in message and field in message, message
        assert len(message.splitlines()) == 1


def test_tiny_file_declaring_gigabytes_is_refused_before_allocating(tmp_path: Path) -> None:
    header, payload = _csr([1, 2**30])
    path = _file(tmp_path / "tiny.safetensors", header, payload)
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"tiny\.safetensors.*4,294,967,296 bytes.*max_bytes"):
        load_sparse(path)
    header, payload = _csr([2**20, 2**30])  # 4 PiB: beyond any limit anyone would set
    path = _file(tmp_path / "huge.safetensors", header, b"\0" * 64)
    with pytest.raises(ValueError, match=r"huge\.safetensors"):
        load_sparse(path, max_bytes=2**60)


def test_max_bytes_is_the_callers_to_raise(tmp_path: Path) -> None:
    header, payload = _csr([4, 2**18])  # 4 MiB dense
    path = _file(tmp_path / "m.safetensors", header, payload)
    assert torch.count_nonzero(load_sparse(path)["w"]) == 0  # within the default
    with pytest.raises(ValueError, match=r"max_bytes=1,000,000"):
        load_sparse(path, max_bytes=1_000_000)
    assert load_sparse(path, max_bytes=4 * 2**20)["w"].shape == (4, 2**18)
    assert load_sparse(path, max_bytes=None)["w"].shape == (4, 2**18)
    for bad in (-1, 1.5, True, "1GB"):
        with pytest.raises((TypeError, ValueError), match="max_bytes"):
            load_sparse(path, max_bytes=bad)  # type: ignore[arg-type]
    assert DEFAULT_MAX_BYTES >= 2**30


def test_with_a_model_the_declared_shapes_are_checked_before_allocating(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4, bias=False))
    header, payload = _csr([1, 2**40])  # 4 TiB
    meta = header["__metadata__"]["adasparse"].replace('"w"', '"0.weight"')
    path = _file(tmp_path / "big.safetensors", {**header, "__metadata__": {"adasparse": meta}}, payload)
    with pytest.raises(ValueError, match=r"big\.safetensors: 0\.weight has shape \(1, 1099511627776\) in the file"):
        load_sparse(path, model, max_bytes=None)
    save_sparse({"0.weight": torch.zeros(4, 4)}, tmp_path / "ok.safetensors")
    assert load_sparse(tmp_path / "ok.safetensors", model, max_bytes=1) is model  # the model bounds the load


def test_stored_tensor_names_must_be_in_the_file(tmp_path: Path) -> None:
    header = {**_meta({"w": {**DENSE["w"], "keys": {"data": "elsewhere"}}}), **STORED}
    with pytest.raises(ValueError, match=r"x\.safetensors: tensor 'w' lacks its stored data \('elsewhere'\)"):
        load_sparse(_file(tmp_path / "x.safetensors", header, b"\0" * 8))
