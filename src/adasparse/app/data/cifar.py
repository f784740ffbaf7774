"""CIFAR-10 / CIFAR-100 from the official python archives, with batched augmentation in torch.

The archives (or their extracted folders) are read in place; the pickled batches are decoded with a restricted
unpickler that can only rebuild numpy arrays, so a tampered file cannot run code. Images are kept as uint8
``(N, 3, 32, 32)`` tensors and turned into normalised float batches by :func:`cifar_train_transform` (random crop
with 4-pixel zero padding and horizontal flip) or :func:`cifar_test_transform`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core._io import create_temporary
from . import DataError, Dataset

__all__ = ["ARCHIVES", "CIFAR_MEAN", "CIFAR_STD", "cifar_test_transform", "cifar_train_transform", "load_cifar"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
_PADDING = 4

ARCHIVES: dict[str, dict[str, Any]] = {
    "cifar10": {
        "title": "CIFAR-10",
        "archive": "cifar-10-python.tar.gz",
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "size": "163 MB",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "labels": b"labels",
        "num_classes": 10,
    },
    "cifar100": {
        "title": "CIFAR-100",
        "archive": "cifar-100-python.tar.gz",
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "size": "161 MB",
        "train": ["train"],
        "test": ["test"],
        "labels": b"fine_labels",
        "num_classes": 100,
    },
}
"""Per data set: archive and folder names, download URL and published MD5, batch files and label key."""

_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, pickle.UnpicklingError, ValueError, TypeError)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed to rebuild arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(f"refusing to load global {module}.{name} from a CIFAR batch")


def _unpickle(data: bytes, source: str) -> dict[bytes, Any]:
    """Decode one pickled batch (bytes keys, as in the official files) with the restricted unpickler."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as err:
        raise DataError(f"{source}: {err}") from None
    except Exception as err:
        raise DataError(f"{source} is corrupt ({type(err).__name__}: {err}); delete it and fetch it again") from err
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a CIFAR batch (expected a dict, got {type(obj).__name__})")
    return {k.encode("latin1") if isinstance(k, str) else k: v for k, v in obj.items()}


def _decode_batch(batch: dict[bytes, Any], label_key: bytes, num_classes: int, source: str) -> tuple[np.ndarray, ...]:
    """Check one batch and return ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``."""
    if b"data" not in batch or label_key not in batch:
        raise DataError(f"{source} needs the keys b'data' and {label_key!r}")
    data, labels = batch[b"data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{source}: expected uint8 data of shape (N, 3072), got {type(data).__name__} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: labels are not integers ({err})") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{source}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source}: labels outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _read_batches(spec: dict[str, Any], root: Path) -> tuple[dict[str, tuple[np.ndarray, ...]], Path]:
    """Decode every batch file, from the extracted folder if present, else straight from the archive."""
    names = spec["train"] + spec["test"]
    folder, archive = root / spec["folder"], root / spec["archive"]

    def decode(name: str, data: bytes, source: Path) -> tuple[np.ndarray, ...]:
        where = f"{source}:{name}"
        return _decode_batch(_unpickle(data, where), spec["labels"], spec["num_classes"], where)

    if folder.is_dir():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{folder} is incomplete (missing {', '.join(missing)}); delete it or re-extract it")
        return {n: decode(n, (folder / n).read_bytes(), folder) for n in names}, folder
    wanted = {f"{spec['folder']}/{n}": n for n in names}
    found: dict[str, tuple[np.ndarray, ...]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is not None and member.isfile():
                    found[name] = decode(name, tar.extractfile(member).read(), archive)
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise DataError(f"{archive} is corrupt or truncated ({err}); delete it and fetch it again") from None
    missing = [m for m, n in wanted.items() if n not in found]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}; it is not the official {spec['title']} archive")
    return found, archive


def _download(spec: dict[str, Any], root: Path) -> None:
    """Fetch the archive into ``root`` via a temporary file, check its MD5, then move it into place atomically."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec["archive"]
    fd, tmp = create_temporary(root, prefix=f".{spec['archive']}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(spec["url"], timeout=60) as response:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except OSError as err:
                raise DataError(
                    f"could not download {spec['url']} ({err}); fetch it by hand and put it in {root}"
                ) from None
        if digest.hexdigest() != spec["md5"]:
            raise DataError(
                f"download of {spec['url']} has MD5 {digest.hexdigest()}, expected {spec['md5']}; try again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_cifar(name: str, data_dir: Path, *, download: bool = False) -> Dataset:
    """Load CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels) from ``data_dir``.

    Looks for the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) and then for the official
    archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``), read in place without extracting.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        data_dir: folder holding the archive or extracted folder (created when downloading).
        download: fetch the archive from the official site when neither is present, verifying its MD5.

    Returns:
        A :class:`Dataset` with uint8 images ``(N, 3, 32, 32)``, int64 labels and the CIFAR transforms.

    Raises:
        DataError: unknown name, data missing (and ``download`` off), download failure, corrupt files.
    """
    if name not in ARCHIVES:
        raise DataError(f"unknown CIFAR variant {name!r}; choose one of {', '.join(ARCHIVES)}")
    spec = ARCHIVES[name]
    root = Path(data_dir).expanduser().resolve()
    if not (root / spec["folder"]).is_dir() and not (root / spec["archive"]).is_file():
        if not download:
            raise DataError(
                f"{spec['title']} not found: put {spec['archive']} (or its extracted folder {spec['folder']}) in "
                f"{root}, or pass --download to fetch it ({spec['size']})"
            )
        _download(spec, root)
    batches, source = _read_batches(spec, root)
    splits = []
    for part in ("train", "test"):
        x = np.concatenate([batches[n][0] for n in spec[part]])
        y = np.concatenate([batches[n][1] for n in spec[part]])
        splits.append((torch.from_numpy(x), torch.from_numpy(y)))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=spec["num_classes"],
        input_shape=(3, 32, 32),
        train_transform=cifar_train_transform,
        test_transform=cifar_test_transform,
        info={"source": str(source), "train_size": len(y_train), "test_size": len(y_test)},
    )


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    """Scale 0..255 pixels to [0, 1] and standardise each channel with :data:`CIFAR_MEAN` / :data:`CIFAR_STD`."""
    x = batch.to(torch.float32) / 255.0
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def cifar_test_transform(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Normalise a ``(B, 3, H, W)`` batch of 0..255 pixels to float32 (``generator`` is ignored)."""
    return _normalise(batch)


def cifar_train_transform(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment and normalise a ``(B, 3, H, W)`` batch of 0..255 pixels, on the batch's device.

    Each image is zero-padded by 4 pixels, cropped back to ``H x W`` at an independent uniform offset and
    flipped horizontally with probability 0.5 (as torchvision's ``RandomCrop(32, padding=4)`` followed by
    ``RandomHorizontalFlip()``), then normalised like :func:`cifar_test_transform`. The random draws come from
    ``generator`` (made on its own device and moved to the batch's), or from torch's global generator if None.
    """
    b, c, h, w = batch.shape
    device = batch.device
    draw_device = generator.device if generator is not None else torch.device("cpu")
    span = 2 * _PADDING + 1
    dy = torch.randint(0, span, (b,), generator=generator, device=draw_device).to(device)
    dx = torch.randint(0, span, (b,), generator=generator, device=draw_device).to(device)
    flip = (torch.rand(b, generator=generator, device=draw_device) < 0.5).to(device)
    padded = torch.nn.functional.pad(batch, (_PADDING, _PADDING, _PADDING, _PADDING))
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    crops = padded[
        torch.arange(b, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return _normalise(crops)
