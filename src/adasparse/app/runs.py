"""Run directories: find a training run's pruned weights and export them (what ``adasparse export`` does).

The file formats themselves live in :mod:`adasparse.export`; this module adds what needs the app: reading a run's
``config.json`` and checkpoint, rebuilding its architecture from :mod:`adasparse.app.models`, and refusing to write
over a run's own files.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.report import check_state_dict
from ..export.sparse import DEFAULT_MAX_BYTES, dense_size, plain_state_dict, save_sparse
from ..export.sparse_schema import check_max_bytes, shape_mismatch

__all__ = [
    "RUN_FILES",
    "ExportResult",
    "RunWeights",
    "export_run",
    "load_run_weights",
    "read_weights_file",
]


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
            ValueError: no ``config.json``, or one without the model name, ``num_classes`` or ``input_shape``; weights
                whose keys or shapes are not the architecture's.
        """
        from .models import create_model

        name, num_classes, input_shape = self._architecture()
        model = create_model(name, num_classes=num_classes, input_shape=input_shape)
        shapes = {key: tuple(tensor.shape) for key, tensor in self.state_dict.items()}
        architecture = f"the run's {name!r} architecture"
        problem = shape_mismatch(shapes, model.state_dict(), architecture)
        if problem:
            raise ValueError(f"{self.source} does not fit {architecture}: {problem}")
        model.load_state_dict(self.state_dict)
        return model.eval()

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero input of the run's ``input_shape`` with a leading batch dimension."""
        _, _, input_shape = self._architecture()
        return torch.zeros(batch_size, *input_shape)

    @property
    def has_architecture(self) -> bool:
        """Whether the run's ``config.json`` names the model, ``num_classes`` and ``input_shape``."""
        try:
            self._architecture()
        except ValueError:
            return False
        return True

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


def load_run_weights(path: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> RunWeights:
    """The pruned weights of a run directory, an adasparse ``checkpoint.pt``, or a saved ``state_dict``.

    A run directory gives its ``model_sparse.pt`` if present, else the model in its ``checkpoint.pt`` (effective
    weights of the sparsified model). A file's ``config.json`` is looked for in its directory.

    Args:
        path: a run directory, ``checkpoint.pt``, ``model_sparse.pt`` or any ``torch.save``-d ``state_dict``.
        max_bytes: the largest size of the weights (as dense tensors) the file may hold; ``None`` for no limit.

    Returns:
        A :class:`RunWeights`.

    Raises:
        ValueError: nothing loadable at ``path`` (naming it).

    Example::

        >>> weights = load_run_weights("runs/20261128-233501")
        >>> model = weights.build_model()
    """
    from .config import RUN_FORMAT

    state, path = read_weights_file(path, max_bytes=max_bytes)
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


def read_weights_file(
    path: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> tuple[dict[str, torch.Tensor], Path]:
    """The ``state_dict`` in a run directory (its ``model_sparse.pt``, else its ``checkpoint.pt``), an adasparse
    checkpoint (its model) or a ``torch.save``-d ``state_dict``, loaded with ``weights_only=True``; and the file.

    Sparse-layout tensors are made dense.

    Args:
        path: a run directory or a file.
        max_bytes: the largest total size of the tensors (elements times element size, as dense tensors) and of the
            archive's records; ``None`` for no limit.

    Raises:
        ValueError: a missing path, an empty, unreadable or hostile file, one that holds no ``state_dict`` (a
            mapping of string keys to tensors with data), or one larger than ``max_bytes``.
    """
    from .config import CHECKPOINT_FORMAT

    check_max_bytes(max_bytes)
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
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a PyTorch file")
    _check_archive_size(path, max_bytes)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - one line for any unreadable file
        raise ValueError(f"{path} is not a readable PyTorch file: {_first_line(error)}") from error
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state.get("model")
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} holds no state_dict (a mapping of names to tensors)")
    total = 0
    for key, tensor in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{path} holds no state_dict: key {key!r} is {type(key).__name__}, not a string")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path} holds no state_dict: {key!r} holds {type(tensor).__name__}, not a tensor")
        if tensor.device.type == "meta":
            raise ValueError(f"{path}: {key!r} is a meta tensor (a shape without data)")
        total += tensor.numel() * tensor.element_size()
    if max_bytes is not None and total > max_bytes:
        raise ValueError(
            f"{path}: its tensors need {total:,} bytes as dense tensors, more than max_bytes={max_bytes:,}: raise "
            "the limit (--max-bytes) if you trust the file"
        )
    try:
        return check_state_dict(state), path
    except RuntimeError as error:
        raise ValueError(f"{path}: a sparse tensor cannot be made dense: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_archive_size(path: Path, max_bytes: int | None) -> None:
    """Refuse a ``torch.save`` zip archive whose records unpack to more than ``max_bytes`` (before loading it)."""
    if max_bytes is None or not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable PyTorch file: {_first_line(error)}") from error
    if size > max_bytes:
        raise ValueError(
            f"{path}: its records unpack to {size:,} bytes, more than max_bytes={max_bytes:,}: raise the limit "
            "(--max-bytes) if you trust the file"
        )


RUN_FILES = frozenset(
    {
        "config.json",
        "checkpoint.pt",
        "metrics.csv",
        "layers.csv",
        "report.json",
        "report.md",
        "summary.json",
        "model_sparse.pt",
        "sparsity_per_layer.png",
        "curves.png",
        "tensorboard",
    }
)
"""The names a training run writes in its directory (``adasparse export`` never writes over them)."""


def _check_target(target: Path, source: Path) -> None:
    """Refuse an export target that would replace the weights, a run's own file, or any ``torch.save`` file."""
    if target.is_dir():
        raise ValueError(f"--out {target} is a directory: name the output file")
    resolved = target.resolve()
    if resolved == source.resolve():
        raise ValueError(f"--out {target} would overwrite the weights it exports")
    for directory in resolved.parents:
        inside = resolved.relative_to(directory).parts[0]
        is_run = (directory / "config.json").is_file() or (directory / "checkpoint.pt").is_file()
        if is_run and inside in RUN_FILES:
            raise ValueError(
                f"--out {target} would overwrite the run's own {inside} in {directory}: choose another file"
            )
    if target.is_file():
        with target.open("rb") as handle:
            magic = handle.read(4)
        if magic == b"PK\x03\x04" or magic[:1] == b"\x80":
            raise ValueError(f"--out {target} would overwrite a torch.save file (a checkpoint?): choose another file")


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
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    shrink: bool = False,
) -> ExportResult:
    """Export a run's (or checkpoint's) pruned model: compressed safetensors or ONNX (what ``adasparse export`` does).

    Args:
        path: run directory, ``checkpoint.pt`` or ``model_sparse.pt`` (see :func:`load_run_weights`).
        format: ``"sparse"`` (:func:`save_sparse`, the run's ``config.json`` as metadata) or ``"onnx"``
            (:func:`adasparse.export_onnx` of the rebuilt architecture; needs ``config.json``).
        out: output file; default ``model_sparse.safetensors`` / ``model.onnx`` beside the weights. Never one of a
            run's own files (:data:`RUN_FILES` in a directory holding ``config.json`` or ``checkpoint.pt``) or an
            existing ``torch.save`` file.
        values_dtype: for ``"sparse"``: ``None`` (exact) or float16/bfloat16 values (lossy); for ``"onnx"`` the
            float16 export is not offered and a non-``None`` value is an error.
        max_bytes: the largest size of the weights (as dense tensors) the input may hold; ``None`` for no limit.
        shrink: remove the channels and heads nothing reads (:func:`adasparse.shrink`, after training with
            ``--granularity channel``) and export the smaller model; ONNX only (its layer widths are new, and the
            ONNX file carries them), default name ``model_shrunk.onnx``.

    Returns:
        An :class:`ExportResult` (path, size, size of the dense ``torch.save`` of the same weights).

    Raises:
        ValueError: unreadable weights, an ``out`` that would overwrite a run's file, weights that do not fit the
            architecture in the run's ``config.json``.

    Example::

        >>> result = export_run("runs/20261128-233501", format="sparse", values_dtype="fp16")
        >>> print(result.path, f"{result.ratio:.3f}x")
    """
    if format not in ("sparse", "onnx"):
        raise ValueError(f"format must be 'sparse' or 'onnx', got {format!r}")
    if shrink and format != "onnx":
        raise ValueError("--shrink writes a model with new layer widths: export it with --format onnx")
    weights = load_run_weights(path, max_bytes=max_bytes)
    default_name = "model_sparse.safetensors" if format == "sparse" else "model.onnx"
    if shrink:
        default_name = "model_shrunk.onnx"
    target = Path(out) if out is not None else weights.source.parent / default_name
    _check_target(target, weights.source)
    dense_state = {key: (t.float() if t.is_floating_point() else t) for key, t in weights.state_dict.items()}
    if format == "sparse":
        if weights.run_config is not None and weights.has_architecture:
            weights.build_model()  # the run's config labels the file: the weights must be that architecture's
        metadata = weights.run_config or {}
        save_sparse(weights.state_dict, target, values_dtype=values_dtype, metadata=metadata)
    else:
        if values_dtype is not None:
            raise ValueError("float16 values are only available for the sparse format")
        from ..export.onnx_export import export_onnx

        model = weights.build_model()
        if shrink:
            from ..core.shrink import shrink as shrink_model

            generator = torch.Generator().manual_seed(0)
            example = torch.randn(weights.example_input(2).shape, generator=generator)
            model = shrink_model(model, example)
        export_onnx(model, weights.example_input(), target)
    return ExportResult(target, target.stat().st_size, dense_size(dense_state))
