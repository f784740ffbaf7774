"""Compressed checkpoints: bitwise round trips per encoding, choice by size, fp16 values, bad files."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core import _io
from adasparse.export import (
    dense_size,
    load_sparse,
    plain_state_dict,
    read_sparse_metadata,
    save_sparse,
)

st = pytest.importorskip("safetensors.torch")

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bit pattern (so -0.0 and NaN count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(
            a.reshape(-1).view(_INT_VIEW[a.element_size()]), b.reshape(-1).view(_INT_VIEW[b.element_size()])
        )
    return torch.equal(a, b)


def _positive_zeros(tensor: torch.Tensor) -> torch.Tensor:
    """``-0.0`` replaced by ``0.0`` (what a round trip gives back), every other bit kept."""
    return torch.where(tensor == 0, torch.zeros_like(tensor), tensor) if tensor.is_floating_point() else tensor


def _sparse_tensor(shape: tuple[int, ...], sparsity: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    tensor = torch.randn(shape, dtype=torch.float64).to(dtype)
    if tensor.numel():
        zeros = torch.randperm(tensor.numel())[: round(sparsity * tensor.numel())]
        tensor.view(-1)[zeros] = 0
    return tensor


def _expected_encoding(tensor: torch.Tensor, value_size: int) -> str:
    numel = tensor.numel()
    nnz = int(torch.count_nonzero(tensor))
    sizes = {"dense": numel * value_size, "bitmask": math.ceil(numel / 8) + nnz * value_size}
    if tensor.dim() >= 1 and tensor.shape[0] > 0:
        rows = tensor.shape[0]
        cols = numel // rows
        sizes["csr"] = nnz * ((2 if cols <= 32768 else 4) + value_size) + (rows + 1) * 4
    return min(sizes, key=lambda k: (sizes[k], ("dense", "bitmask", "csr").index(k)))


CASES = [
    ("dense_matrix", (64, 48), 0.0, torch.float32, "dense"),
    ("bitmask_half_sparse", (64, 48), 0.5, torch.float32, "bitmask"),
    ("bitmask_90", (128, 96), 0.9, torch.float32, "bitmask"),
    ("csr_int16_98", (256, 300), 0.98, torch.float32, "csr"),
    ("csr_int32_wide", (2, 40000), 0.999, torch.float32, "csr"),
    ("conv4d_95", (64, 32, 3, 3), 0.95, torch.float32, None),
    ("conv4d_70", (32, 16, 5, 5), 0.7, torch.float32, "bitmask"),
    ("float64_95", (50, 70), 0.95, torch.float64, None),
    ("float16_90", (40, 64), 0.9, torch.float16, None),
    ("bfloat16_99", (100, 80), 0.99, torch.bfloat16, "csr"),
    ("bias_1d", (300,), 0.0, torch.float32, "dense"),
    ("bias_1d_sparse", (300,), 0.9, torch.float32, "bitmask"),
    ("scalar", (), 0.0, torch.float32, "dense"),
    ("empty", (0, 5), 0.0, torch.float32, "dense"),
]


@pytest.mark.parametrize(("shape", "sparsity", "dtype", "encoding"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_round_trip_is_bitwise_and_encoding_is_the_smallest(
    tmp_path: Path, shape: tuple[int, ...], sparsity: float, dtype: torch.dtype, encoding: str | None
) -> None:
    tensor = _sparse_tensor(shape, sparsity, dtype)
    header = save_sparse({"t": tensor}, tmp_path / "t.safetensors")
    chosen = header["tensors"]["t"]["encoding"]
    assert chosen == _expected_encoding(tensor, tensor.element_size())
    if encoding is not None:
        assert chosen == encoding
    assert header["tensors"]["t"]["shape"] == list(shape)
    assert header["tensors"]["t"]["nnz"] == int(torch.count_nonzero(tensor))
    loaded = load_sparse(tmp_path / "t.safetensors")
    assert list(loaded) == ["t"] and _bits_equal(loaded["t"], tensor)


def test_csr_index_width_follows_the_column_count(tmp_path: Path) -> None:
    narrow, wide = _sparse_tensor((300, 256), 0.99), _sparse_tensor((2, 40000), 0.999)
    header = save_sparse({"narrow": narrow, "wide": wide}, tmp_path / "t.safetensors")
    assert header["tensors"]["narrow"]["encoding"] == header["tensors"]["wide"]["encoding"] == "csr"
    with st.safe_open(str(tmp_path / "t.safetensors"), "pt") as handle:
        assert handle.get_tensor("narrow::indices").dtype == torch.int16
        assert handle.get_tensor("wide::indices").dtype == torch.int32
        assert handle.get_tensor("wide::indptr").dtype == torch.int32


def test_bitmask_is_packed_little_endian(tmp_path: Path) -> None:
    tensor = torch.zeros(64, 64)
    tensor[0, :8] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    tensor[0, 9] = 2.0
    tensor[1:, ::2] = 3.0
    header = save_sparse({"t": tensor}, tmp_path / "t.safetensors")
    assert header["tensors"]["t"]["encoding"] == "bitmask"
    with st.safe_open(str(tmp_path / "t.safetensors"), "pt") as handle:
        mask = handle.get_tensor("t::mask")
    assert mask[0].item() == 0b00000001 and mask[1].item() == 0b00000010


@pytest.mark.parametrize("sparsity", [0.5, 0.99])
def test_nan_and_inf_survive_and_negative_zero_is_zero(tmp_path: Path, sparsity: float) -> None:
    tensor = _sparse_tensor((200, 100), sparsity)
    tensor[0, 0], tensor[1, 5], tensor[2, 7], tensor[3, 3] = -0.0, float("nan"), float("inf"), -1.5
    header = save_sparse({"t": tensor}, tmp_path / "t.safetensors")
    assert header["tensors"]["t"]["nnz"] == int((tensor != 0).sum())
    loaded = load_sparse(tmp_path / "t.safetensors")["t"]
    expected = tensor.clone()
    expected[0, 0] = 0.0
    assert _bits_equal(loaded, expected) and not torch.signbit(loaded[0, 0])


def test_torch_prune_masks_are_applied_and_dropped(tmp_path: Path) -> None:
    import torch.nn.utils.prune as torch_prune

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    torch_prune.l1_unstructured(model[0], "weight", amount=0.9)
    header = save_sparse(model, tmp_path / "m.safetensors")
    assert list(header["tensors"]) == ["0.bias", "0.weight", "2.weight", "2.bias"]
    assert header["tensors"]["0.weight"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    loaded = load_sparse(tmp_path / "m.safetensors")
    assert (
        torch.equal(loaded["0.weight"], model[0].weight)
        and not torch.signbit(loaded["0.weight"][loaded["0.weight"] == 0]).any()
    )
    torch_prune.remove(model[0], "weight")
    assert load_sparse(tmp_path / "m.safetensors", nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))


def test_buffers_and_integer_tensors_are_kept(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.Flatten(), nn.Linear(32 * 6 * 6, 10))
    model.register_buffer("flags", torch.tensor([True, False, True]))
    model.register_buffer("counts", torch.arange(7, dtype=torch.int32))
    model(torch.randn(4, 3, 8, 8))  # updates running stats and num_batches_tracked
    header = save_sparse(model, tmp_path / "m.safetensors")
    assert header["tensors"]["1.num_batches_tracked"] == {
        "dtype": "int64",
        "shape": [],
        "nnz": 1,
        "sparsity": 0.0,
        "encoding": "dense",
        "keys": {"data": "1.num_batches_tracked"},
    }
    loaded = load_sparse(tmp_path / "m.safetensors")
    reference = model.state_dict()
    assert list(loaded) == list(reference)
    assert all(_bits_equal(loaded[k], reference[k]) for k in reference)


def _pruned_mlp(sparsity: float = 0.9) -> nn.Module:
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    adasparse.sparsify(model, target=sparsity, trainable=False)
    adasparse.calibrate(model, sparsity)
    return model


def test_sparsified_model_is_stored_as_its_desparsified_weights(tmp_path: Path) -> None:
    model = _pruned_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    header = save_sparse(model, tmp_path / "m.safetensors")
    assert adasparse.pruned_tensors(model), "the input model stays sparsified"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    expected = adasparse.desparsify(copy.deepcopy(model)).state_dict()
    assert list(header["tensors"]) == list(expected)
    assert not any(k.endswith(("_orig", "_threshold")) for k in header["tensors"])
    loaded = load_sparse(tmp_path / "m.safetensors")
    assert all(_bits_equal(loaded[k], expected[k]) for k in expected)
    from_state_dict = plain_state_dict(model.state_dict())
    assert all(_bits_equal(from_state_dict[k], expected[k]) for k in expected)


def test_load_into_a_model_and_mismatches(tmp_path: Path) -> None:
    model = _pruned_mlp()
    save_sparse(model, tmp_path / "m.safetensors")
    fresh = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    assert load_sparse(tmp_path / "m.safetensors", fresh) is fresh
    x = torch.randn(5, 128)
    with torch.no_grad():
        assert torch.equal(fresh(x), adasparse.desparsify(copy.deepcopy(model))(x))

    wrong = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(
        ValueError, match=r"m\.safetensors: 2\.weight has shape \(256, 256\) in the file but \(128, 256\)"
    ):
        load_sparse(tmp_path / "m.safetensors", wrong)
    with pytest.raises(ValueError, match=r"m\.safetensors does not match.*not in the model: 4\.weight, 4\.bias"):
        load_sparse(tmp_path / "m.safetensors", fresh[:4])
    with pytest.raises(ValueError, match=r"missing from the file: 5\.weight, 5\.bias"):
        load_sparse(tmp_path / "m.safetensors", nn.Sequential(*fresh, nn.Linear(10, 2)))
    with pytest.raises(ValueError, match="into a sparsified model"):
        load_sparse(tmp_path / "m.safetensors", _pruned_mlp())


def test_size_goals(tmp_path: Path) -> None:
    for sparsity, bound in ((0.9, 0.15), (0.98, 0.05)):
        layer = nn.Linear(1024, 1024)
        with torch.no_grad():
            layer.weight.copy_(_sparse_tensor((1024, 1024), sparsity))
        dense = dense_size(layer.state_dict())
        save_sparse(layer, tmp_path / "fp32.safetensors")
        save_sparse(layer, tmp_path / "fp16.safetensors", values_dtype=torch.float16)
        fp32, fp16 = (tmp_path / "fp32.safetensors").stat().st_size, (tmp_path / "fp16.safetensors").stat().st_size
        assert fp32 / dense <= bound
        assert 0.4 < fp16 / fp32 < 0.7


@pytest.mark.parametrize("values_dtype", [torch.float16, "bf16"])
def test_half_precision_values(tmp_path: Path, values_dtype: torch.dtype | str) -> None:
    model = _pruned_mlp()
    model.register_buffer("steps", torch.tensor(3))
    header = save_sparse(model, tmp_path / "h.safetensors", values_dtype=values_dtype)
    stored = torch.float16 if values_dtype is torch.float16 else torch.bfloat16
    assert header["values_dtype"] == str(stored).replace("torch.", "")
    with st.safe_open(str(tmp_path / "h.safetensors"), "pt") as handle:
        assert handle.get_tensor("0.bias").dtype == stored
        assert handle.get_tensor("steps").dtype == torch.int64
    loaded = load_sparse(tmp_path / "h.safetensors")
    expected = plain_state_dict(model)
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype
        if tensor.is_floating_point():
            torch.testing.assert_close(loaded[key], tensor.to(stored).to(tensor.dtype), rtol=0, atol=0)
            assert torch.equal(loaded[key] == 0, tensor.to(stored) == 0)
    assert torch.equal(loaded["steps"], torch.tensor(3))


def test_values_dtype_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="values_dtype must be"):
        save_sparse({"t": torch.ones(3)}, tmp_path / "x.safetensors", values_dtype=torch.int8)
    with pytest.raises(ValueError, match="beyond the range of float16"):
        save_sparse({"big": torch.full((10,), 1e6)}, tmp_path / "x.safetensors", values_dtype="fp16")
    save_sparse({"big": torch.full((10,), 1e6)}, tmp_path / "x.safetensors", values_dtype="bf16")
    assert load_sparse(tmp_path / "x.safetensors")["big"][0].item() == pytest.approx(1e6, rel=1e-2)


def test_metadata_is_stored_and_validated(tmp_path: Path) -> None:
    save_sparse({"t": torch.ones(2)}, tmp_path / "m.safetensors", metadata={"model": "mlp", "shape": [1, 8, 8]})
    meta = read_sparse_metadata(tmp_path / "m.safetensors")
    assert meta["format"] == "adasparse.sparse" and meta["version"] == 1
    assert meta["adasparse"] == adasparse.__version__
    assert meta["metadata"] == {"model": "mlp", "shape": [1, 8, 8]}
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_sparse({"t": torch.ones(2)}, tmp_path / "n.safetensors", metadata={"bad": object()})
    with pytest.raises(TypeError, match="model_or_state_dict"):
        save_sparse([torch.ones(2)], tmp_path / "n.safetensors")  # type: ignore[arg-type]


def test_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.safetensors"
    save_sparse({"old": torch.ones(4)}, target)
    before = target.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_sparse({"new": torch.zeros(4)}, target)
    monkeypatch.undo()
    with pytest.raises(ValueError):
        save_sparse({"new": torch.zeros(4)}, target, metadata={"bad": {1, 2}})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def _mixed_file(path: Path) -> Path:
    state = {
        "dense": torch.randn(8, 8),
        "mask": _sparse_tensor((64, 64), 0.8),
        "csr": _sparse_tensor((64, 64), 0.99),
        "count": torch.tensor(5),
    }
    header = save_sparse(state, path)
    assert [header["tensors"][k]["encoding"] for k in ("dense", "mask", "csr")] == ["dense", "bitmask", "csr"]
    return path


@pytest.mark.parametrize("cut", [0, 4, 12, 100, -1, -200])
def test_truncated_file(tmp_path: Path, cut: int) -> None:
    data = _mixed_file(tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[:cut])
    for read in (load_sparse, read_sparse_metadata):
        with pytest.raises(ValueError, match=r"m\.safetensors.*(truncated|not a safetensors)"):
            read(tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    "content",
    [b"hello world, certainly not a tensor file", b"\x00" * 64, b"\xff" * 16 + b"{}"],
    ids=["text", "zeros", "huge_header"],
)
def test_not_a_safetensors_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=r"x\.safetensors"):
        load_sparse(tmp_path / "x.safetensors")


def test_torch_save_file_is_named_as_such(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3)}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt is a torch\.save \(zip\) file"):
        load_sparse(tmp_path / "w.pt")


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    st.save_file({"w": torch.ones(3)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"foreign\.safetensors has no 'adasparse' metadata"):
        load_sparse(tmp_path / "foreign.safetensors")
    st.save_file({"w": torch.ones(3)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="no 'adasparse' metadata"):
        read_sparse_metadata(tmp_path / "bare.safetensors")


def _rewrite_header(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    meta = json.loads(header["__metadata__"]["adasparse"])
    result = edit(meta)
    header["__metadata__"]["adasparse"] = result if isinstance(result, str) else json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


TAMPERING = {
    "not_json": (lambda m: "{not json", "not valid JSON"),
    "other_format": (lambda m: m.update(format="something.else"), "does not describe"),
    "future_version": (lambda m: m.update(version=99), "format version 99"),
    "no_tensors": (lambda m: m.pop("tensors"), "no 'tensors' table"),
    "unknown_encoding": (lambda m: m["tensors"]["mask"].update(encoding="zip"), "unknown encoding 'zip'"),
    "unknown_dtype": (lambda m: m["tensors"]["dense"].update(dtype="float7"), "unknown dtype"),
    "dense_shape": (lambda m: m["tensors"]["dense"].update(shape=[4, 16]), "shape"),
    "bad_shape": (lambda m: m["tensors"]["dense"].update(shape=[-1, 8]), "invalid shape"),
    "bitmask_shape": (lambda m: m["tensors"]["mask"].update(shape=[32, 64]), r"mask.*shape"),
    "csr_rows": (lambda m: m["tensors"]["csr"].update(shape=[32, 128]), "indptr"),
    "csr_as_bitmask": (lambda m: m["tensors"]["csr"].update(encoding="bitmask"), "lacks its stored part 'mask'"),
    "missing_entry": (lambda m: m["tensors"].pop("mask"), "not described by the metadata"),
    "wrong_key": (lambda m: m["tensors"]["dense"]["keys"].update(data="nope"), "lacks its stored data"),
    "values_dtype": (lambda m: m.update(values_dtype="float16"), "dtype"),
    "int_as_csr": (lambda m: m["tensors"]["count"].update(encoding="csr"), "cannot have encoding"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_metadata(tmp_path: Path, case: str) -> None:
    path = _mixed_file(tmp_path / "m.safetensors")
    edit, message = TAMPERING[case]
    _rewrite_header(path, edit)
    with pytest.raises(ValueError, match=message) as error:
        load_sparse(path)
    assert "m.safetensors" in str(error.value)


def _rewrite_tensors(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with st.safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    edit(tensors)
    path.write_bytes(st.save(tensors, metadata=metadata))


def _shift_indptr(t: dict[str, torch.Tensor]) -> None:
    t["csr::indptr"][-1] += 1


def _column_out_of_range(t: dict[str, torch.Tensor]) -> None:
    t["csr::indices"][0] = 64


def _repeat_column(t: dict[str, torch.Tensor]) -> None:
    t["csr::indices"][:] = 0


def _extra_value(t: dict[str, torch.Tensor]) -> None:
    t["mask::values"] = torch.cat([t["mask::values"], torch.ones(1)])


def _extra_tensor(t: dict[str, torch.Tensor]) -> None:
    t["smuggled"] = torch.ones(1)


def _values_as_double(t: dict[str, torch.Tensor]) -> None:
    t["mask::values"] = t["mask::values"].double()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_shift_indptr, "row pointers"),
        (_column_out_of_range, "column indices outside"),
        (_repeat_column, "unsorted or repeated"),
        (_extra_value, r"mask::values.*shape"),
        (_extra_tensor, "smuggled"),
        (_values_as_double, "dtype float64"),
    ],
    ids=["indptr", "column_range", "repeated_columns", "values_count", "extra_tensor", "values_dtype"],
)
def test_inconsistent_encodings(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _mixed_file(tmp_path / "m.safetensors")
    _rewrite_tensors(path, edit)
    with pytest.raises(ValueError, match=message):
        load_sparse(path)


def test_missing_safetensors_gives_the_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r'pip install "adasparse\[export\]"'):
        save_sparse({"t": torch.ones(2)}, tmp_path / "x.safetensors")


def test_import_adasparse_without_optional_packages() -> None:
    code = (
        "import sys\n"
        "for name in ('safetensors', 'onnx', 'onnxscript', 'onnxruntime', 'scipy'):\n"
        "    sys.modules[name] = None\n"
        "import adasparse\n"
        "assert callable(adasparse.save_sparse) and callable(adasparse.export_onnx)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
