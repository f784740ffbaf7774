"""Tiny CIFAR-10/100 archives in the official python format, for tests (real CIFAR cannot be fetched here)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

PER_BATCH = 6


def _batch(rng: np.random.Generator, n: int, label_key: bytes, num_classes: int) -> dict[bytes, object]:
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def _files(variant: str, seed: int = 0, per_batch: int = PER_BATCH) -> dict[str, bytes]:
    """Pickled members (path inside the archive -> bytes) of a tiny archive in the official layout."""
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        names = {f"data_batch_{i}": _batch(rng, per_batch, b"labels", 10) for i in range(1, 6)}
        names["test_batch"] = _batch(rng, per_batch, b"labels", 10)
        names["batches.meta"] = {b"label_names": [b"airplane"] * 10, b"num_vis": 3072}
        return {f"cifar-10-batches-py/{k}": pickle.dumps(v) for k, v in names.items()}
    names = {
        "train": _batch(rng, 2 * per_batch, b"fine_labels", 100),
        "test": _batch(rng, per_batch, b"fine_labels", 100),
    }
    names["meta"] = {b"fine_label_names": [b"apple"] * 100, b"coarse_label_names": [b"fish"] * 20}
    return {f"cifar-100-python/{k}": pickle.dumps(v) for k, v in names.items()}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_cifar_archive(directory: Path, variant: str = "cifar10", per_batch: int = PER_BATCH, seed: int = 0) -> Path:
    """Write ``cifar-10-python.tar.gz`` (or the CIFAR-100 one) with ``per_batch`` images per batch file."""
    name = "cifar-10-python.tar.gz" if variant == "cifar10" else "cifar-100-python.tar.gz"
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_tar_gz(_files(variant, seed, per_batch)))
    return path
