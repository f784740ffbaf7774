"""CIFAR loader: official archive layout, restricted unpickling, download, and the batched transforms."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from adasparse.app.data import DataError, cifar, load_dataset
from adasparse.app.data.cifar import CIFAR_MEAN, CIFAR_STD, cifar_test_transform, cifar_train_transform, load_cifar

from ...cifar_sample import _files, _tar_gz

PER_BATCH = 6


def _expected(files: dict[str, bytes], names: list[str], key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Images built pixel by pixel from the 3072-byte rows: R plane, G plane, B plane, each row-major 32x32."""
    batches = [pickle.loads(files[n]) for n in names]
    rows = np.concatenate([b[b"data"] for b in batches])
    x = np.zeros((len(rows), 3, 32, 32), dtype=np.uint8)
    for i, row in enumerate(rows):
        for ch in range(3):
            for r in range(32):
                x[i, ch, r] = row[ch * 1024 + r * 32 : ch * 1024 + (r + 1) * 32]
    y = np.concatenate([b[key] for b in batches]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def test_cifar10_archive_reads_back_exactly(tmp_path: Path) -> None:
    files = _files("cifar10")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(_tar_gz(files))
    ds = load_dataset("cifar10", data_dir=tmp_path)
    prefix = "cifar-10-batches-py/"
    x_train, y_train = _expected(files, [f"{prefix}data_batch_{i}" for i in range(1, 6)], b"labels")
    x_test, y_test = _expected(files, [f"{prefix}test_batch"], b"labels")
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert torch.equal(ds.x_train, x_train) and torch.equal(ds.y_train, y_train)
    assert torch.equal(ds.x_test, x_test) and torch.equal(ds.y_test, y_test)
    assert (ds.name, ds.num_classes, ds.input_shape) == ("cifar10", 10, (3, 32, 32))
    assert ds.info == {"source": str(tmp_path / "cifar-10-python.tar.gz"), "train_size": 30, "test_size": 6}
    assert ds.train_transform is cifar_train_transform and ds.test_transform is cifar_test_transform
    assert len(pickle.dumps((ds.train_transform, ds.test_transform))) > 0


def test_cifar100_extracted_folder(tmp_path: Path) -> None:
    files = _files("cifar100")
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    ds = load_cifar("cifar100", tmp_path)
    x_train, y_train = _expected(files, ["cifar-100-python/train"], b"fine_labels")
    x_test, y_test = _expected(files, ["cifar-100-python/test"], b"fine_labels")
    assert torch.equal(ds.x_train, x_train) and torch.equal(ds.y_train, y_train)
    assert torch.equal(ds.x_test, x_test) and torch.equal(ds.y_test, y_test)
    assert ds.num_classes == 100
    assert ds.info == {"source": str(tmp_path / "cifar-100-python"), "train_size": 12, "test_size": 6}


def test_python2_pickle_with_legacy_numpy_names(tmp_path: Path) -> None:
    """The official files are Python 2 pickles: byte strings, ``numpy.core`` globals and label lists."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    def array(raw: bytes, n: int) -> bytes:
        minus_one = b"J\xff\xff\xff\xff"
        dtype = b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|") + b"NNN" + 2 * minus_one + b"K\x00tb"
        head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
        shape = b"K" + bytes([n]) + b"M\x00\x0c\x86"
        return head + b"(K\x01" + shape + dtype + b"\x89T" + len(raw).to_bytes(4, "little") + raw + b"tb"

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, 2 * 3072, dtype=np.uint8).tobytes()
    batch = b"\x80\x02}(" + s(b"data") + array(raw, 2) + s(b"labels") + b"](K\x03K\x07eu."
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch)
    ds = load_cifar("cifar10", tmp_path)
    assert torch.equal(ds.x_test, torch.from_numpy(np.frombuffer(bytearray(raw), np.uint8).reshape(2, 3, 32, 32)))
    assert ds.y_train.tolist() == [3, 7] * 5


def test_missing_data_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*cifar-10-batches-py.*--download"):
        load_cifar("cifar10", tmp_path)
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz.*--download"):
        load_cifar("cifar100", tmp_path)
    with pytest.raises(DataError, match="unknown"):
        load_cifar("cifar1000", tmp_path)


def test_truncated_or_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    data = _tar_gz(_files("cifar10"))
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_cifar("cifar10", tmp_path)
    archive.write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_cifar("cifar10", tmp_path)


def test_wrong_shapes_or_missing_member(tmp_path: Path) -> None:
    files = _files("cifar10")
    bad = pickle.loads(files["cifar-10-batches-py/test_batch"])
    bad[b"data"] = bad[b"data"][:, :100]
    files["cifar-10-batches-py/test_batch"] = pickle.dumps(bad)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(_tar_gz(files))
    with pytest.raises(DataError, match=r"test_batch.*\(N, 3072\)"):
        load_cifar("cifar10", tmp_path)
    del files["cifar-10-batches-py/test_batch"]
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(_tar_gz(files))
    with pytest.raises(DataError, match="test_batch"):
        load_cifar("cifar10", tmp_path)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_forbidden_global_is_refused_and_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = _files("cifar10")
    batch = pickle.loads(files["cifar-10-batches-py/data_batch_2"])
    batch[b"extra"] = _Evil()
    files["cifar-10-batches-py/data_batch_2"] = pickle.dumps(batch)
    assert b"system" in files["cifar-10-batches-py/data_batch_2"]
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(_tar_gz(files))
    with pytest.raises(DataError, match=r"data_batch_2.*(os|posix|nt)\.system"):
        load_cifar("cifar10", tmp_path)
    assert not (tmp_path / "pwned").exists()


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(monkeypatch: pytest.MonkeyPatch, data: bytes, md5: str) -> list[str]:
    urls: list[str] = []

    def urlopen(url: str, timeout: float | None = None) -> _Response:
        urls.append(url)
        return _Response(data)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    spec = dict(cifar.ARCHIVES["cifar100"], md5=md5)
    monkeypatch.setitem(cifar.ARCHIVES, "cifar100", spec)
    return urls


def test_download_verifies_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _tar_gz(_files("cifar100"))
    urls = _serve(monkeypatch, data, hashlib.md5(data).hexdigest())
    data_dir = tmp_path / "new" / "data"
    ds = load_cifar("cifar100", data_dir, download=True)
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert os.listdir(data_dir) == ["cifar-100-python.tar.gz"]
    assert (data_dir / "cifar-100-python.tar.gz").read_bytes() == data
    assert ds.info["train_size"] == 12
    load_cifar("cifar100", data_dir, download=True)
    assert len(urls) == 1


def test_download_with_wrong_md5_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(monkeypatch, _tar_gz(_files("cifar100")), "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        load_cifar("cifar100", tmp_path, download=True)
    assert os.listdir(tmp_path) == []


def _batch_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_train_transform_shape_dtype_and_determinism() -> None:
    x = _batch_images(16)
    out = cifar_train_transform(x, torch.Generator().manual_seed(3))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, cifar_train_transform(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, cifar_train_transform(x, torch.Generator().manual_seed(4)))


def test_train_transform_is_padded_crop_and_flip() -> None:
    x = _batch_images(64, seed=1)
    out = cifar_train_transform(x, torch.Generator().manual_seed(0))
    padded = _normalise(torch.nn.functional.pad(x, (4, 4, 4, 4)))
    seen_offsets, flips = set(), 0
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.allclose(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy : dy + 32, dx : dx + 32]))
        ]
        assert len(matches) == 1, f"image {i} is not a unique padded crop"
        seen_offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_offsets) > 20 and 0 < flips < len(x)


def test_train_transform_flips_about_half() -> None:
    x = torch.zeros(4000, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 4:28, 4:8] = 255  # a bar in the left half stays left unless the image is flipped
    out = cifar_train_transform(x, torch.Generator().manual_seed(0))
    left = out[:, 0, :, :16].sum((1, 2))
    right = out[:, 0, :, 16:].sum((1, 2))
    assert abs((right > left).float().mean().item() - 0.5) < 0.04


def test_test_transform_is_plain_normalisation() -> None:
    x = _batch_images(8)
    out = cifar_test_transform(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _normalise(x))
    torch.testing.assert_close(cifar_test_transform(x, None), out)


def test_transforms_accept_float_batches() -> None:
    x = _batch_images(8)
    for transform in (cifar_train_transform, cifar_test_transform):
        a = transform(x, torch.Generator().manual_seed(5))
        b = transform(x.float(), torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b)
    assert cifar_train_transform(x, None).shape == x.shape


def test_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def urlopen(url: str, timeout: float | None = None) -> _Response:
        raise OSError("connection reset")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DataError, match="could not download.*connection reset"):
        load_cifar("cifar10", tmp_path, download=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_transform_on_cuda_with_cpu_generator() -> None:
    x = _batch_images(16)
    cpu = cifar_train_transform(x, torch.Generator().manual_seed(2))
    gpu = cifar_train_transform(x.cuda(), torch.Generator().manual_seed(2))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)
