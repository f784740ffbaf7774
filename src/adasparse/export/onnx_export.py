"""ONNX export of a pruned model, checked with the ONNX checker and comparable with onnxruntime.

Uses torch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, the default since torch
2.9), which needs the ``onnx`` and ``onnxscript`` packages; onnxruntime is only needed to run or compare the
result. Install them with ``pip install "adasparse[onnx]"``.

Plain ONNX stores every weight densely, zeros included: a 95%-sparse model exports to an ONNX file as large as
the dense one. For a small file use :func:`adasparse.save_sparse` (compressed safetensors) and rebuild the model
where it runs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from ..core._io import atomic_write_bytes
from ..core.parametrization import pruned_tensors
from ..core.sparsify import desparsify

__all__ = ["compare_onnx_outputs", "export_onnx"]

_INSTALL_HINT = 'pip install "adasparse[onnx]"'
_PROTOBUF_LIMIT = 2**31 - 1
Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def _require(module: str, purpose: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs the {module} package: {_INSTALL_HINT}") from error


def _as_tuple(example_input: Inputs) -> tuple[torch.Tensor, ...]:
    inputs = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TypeError("example_input must be a tensor or a non-empty sequence of tensors")
    return inputs


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines, its warnings and its logging about missing torchvision ops."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model``; a sparsified model is desparsified (zeros baked in) in the copy."""
    model = copy.deepcopy(model)
    if pruned_tensors(model):
        desparsify(model)
    return model.eval()


def export_onnx(
    model: nn.Module,
    example_input: Inputs,
    path: str | Path,
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Export the desparsified ``model`` to an ONNX file, check it with ``onnx.checker``, write it atomically.

    The model is copied (a sparsified model is desparsified in the copy; ``model`` itself is not changed) and put
    in eval mode. Dimension 0 of every input is exported as a dynamic batch size.

    Args:
        model: a sparsified or plain model (no :class:`adasparse.SparseLinear`: ONNX has no sparse matmul here).
        example_input: one tensor, or a sequence of tensors for a model with several inputs.
        path: the output ``.onnx`` file (replaced only by a complete new file).
        opset: ONNX opset version; ``None`` takes the exporter's default (20 with torch 2.13).
        dynamic_batch: export dimension 0 as a symbolic batch size (``False``: the example's sizes are fixed).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ImportError: ``onnx``/``onnxscript`` missing (``pip install "adasparse[onnx]"``).
        ValueError: the exporter or the checker rejected the model (the first line of its message).

    Example::

        >>> export_onnx(pruned_model, torch.zeros(1, 1, 8, 8), "model.onnx")
        >>> compare_onnx_outputs("model.onnx", pruned_model, torch.randn(16, 1, 8, 8))
    """
    onnx = _require("onnx", "ONNX export")
    _require("onnxscript", "torch's ONNX exporter")
    inputs = _as_tuple(example_input)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be an ONNX opset version (an integer >= 7) or None, got {opset!r}")
    from .inference import SparseLinear

    if any(isinstance(module, SparseLinear) for module in model.modules()):
        raise ValueError(
            "export_onnx needs the model before adasparse.to_sparse_inference (SparseLinear has no ONNX op)"
        )
    exported = _inference_copy(model)
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} if t.dim() > 0 else None for t in inputs)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                exported, inputs, dynamo=True, opset_version=opset, dynamic_shapes=dynamic_shapes, verbose=False
            )
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = "; try dynamic_batch=False" if dynamic_batch else ""
        raise ValueError(f"ONNX export of {type(model).__name__} failed: {message}{hint}") from error
    proto = program.model_proto
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ValueError("the model is larger than ONNX's 2 GB single-file limit; export it with torch.onnx directly")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:
        raise ValueError(f"the exported ONNX model fails onnx.checker: {error}") from error
    path = Path(path)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


def compare_onnx_outputs(
    path: str | Path,
    model: nn.Module,
    inputs: Inputs,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Run the ONNX file with onnxruntime (CPU) and the desparsified ``model`` with torch on ``inputs``; compare.

    Args:
        path: an ONNX file, e.g. from :func:`export_onnx`.
        model: the model it was exported from (sparsified or plain; not changed).
        inputs: one tensor or a sequence of tensors, in the model's input order.
        rtol, atol: tolerance, as in ``numpy.allclose``, applied to every output.

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ImportError: onnxruntime missing.
        ValueError: an output differs beyond the tolerance, or the output counts or shapes differ.

    Example::

        >>> compare_onnx_outputs("model.onnx", model, torch.randn(8, 40))
        2.384185791015625e-07
    """
    ort = _require("onnxruntime", "running an ONNX file")
    tensors = _as_tuple(inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    if len(names) != len(tensors):
        raise ValueError(f"{path} takes {len(names)} inputs, got {len(tensors)}")
    onnx_outputs = session.run(None, {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)})
    with torch.no_grad():
        result = _inference_copy(model)(*tensors)
    torch_outputs = [result] if isinstance(result, torch.Tensor) else list(result)
    if len(torch_outputs) != len(onnx_outputs):
        raise ValueError(f"{path} gives {len(onnx_outputs)} outputs, the model {len(torch_outputs)}")
    worst = 0.0
    for index, (expected, actual) in enumerate(zip(torch_outputs, onnx_outputs)):
        expected_np = expected.detach().cpu().numpy()
        if expected_np.shape != actual.shape:
            raise ValueError(f"output {index}: shape {actual.shape} from onnxruntime, {expected_np.shape} from torch")
        difference = float(np.max(np.abs(expected_np - actual))) if expected_np.size else 0.0
        worst = max(worst, difference)
        if not np.allclose(actual, expected_np, rtol=rtol, atol=atol):
            raise ValueError(
                f"output {index} of {path} differs from torch by up to {difference:.3g} (rtol={rtol}, atol={atol})"
            )
    return worst
