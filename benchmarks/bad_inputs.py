"""Try every bad input we know of and write what it gets into docs/reliability.md (the table is generated).

python benchmarks/bad_inputs.py            # prints the table and rewrites docs/reliability.md's section
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

import adasparse  # noqa: E402
from adasparse.app.cli import main  # noqa: E402


def _cli(argv: list[str]) -> tuple[str, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    lines = err.getvalue().strip().splitlines()
    return f"exit {status}", lines[-1] if lines else ("(correct result)" if status == 0 else "")


def _api(call: Callable[[], object]) -> tuple[str, str]:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - we report whatever the library raises
        return type(error).__name__, str(error).splitlines()[0]
    return "no error", ""


class _Hostile:
    def __reduce__(self):
        return (print, ("executed!",))


def _safetensors(path: Path, tensors: object, stored: dict[str, object], payload: bytes = b"") -> Path:
    """A hand-made safetensors file with adasparse metadata describing ``tensors``."""
    meta = {"format": "adasparse.sparse", "version": 1, "values_dtype": None, "tensors": tensors, "metadata": {}}
    text = json.dumps({"__metadata__": {"adasparse": json.dumps(meta)}, **stored}).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + payload)
    return path


def _untrusted(work: Path) -> dict[str, Path]:
    """Safetensors files whose headers lie or do not fit the format."""
    dense = {"encoding": "dense", "dtype": "float32", "shape": [2], "keys": {"data": "w"}}
    stored = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    csr = {
        "encoding": "csr",
        "dtype": "float32",
        "shape": [1, 2**30],
        "keys": {"indptr": "p", "indices": "i", "values": "v"},
    }
    empty = {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}
    parts = {"p": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}, "i": {**empty, "dtype": "I16"}, "v": empty}
    files = {
        "gigabytes": _safetensors(work / "tiny.safetensors", {"w": csr}, parts, b"\0" * 8),
        "offsets": _safetensors(
            work / "offsets.safetensors", {"w": dense}, {"w": {**stored, "data_offsets": []}}, b"\0" * 8
        ),
        "keys": _safetensors(
            work / "keys.safetensors", {"w": {**dense, "keys": {"data": ["w"]}}}, {"w": stored}, b"\0" * 8
        ),
        "shape": _safetensors(
            work / "shape.safetensors", {"w": {**dense, "shape": [2**62, 2**62]}}, {"w": stored}, b"\0" * 8
        ),
    }
    files["metadata"] = work / "metadata.safetensors"
    text = json.dumps({"__metadata__": ["x"], "w": stored}).encode()
    files["metadata"].write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 8)
    return files


def _checkpoints(work: Path) -> dict[str, Path]:
    """Loadable ``torch.save`` files that are not what ``report`` and ``export`` expect."""
    contents: dict[str, object] = {
        "integer_keys": {1: torch.ones(3, 3)},
        "expanded": {"w": torch.ones(1).expand(2**36)},
        "sparse": {"layer.weight": torch.eye(40).to_sparse()},
        "empty_orig": {"w_orig": torch.zeros(0, 5), "w_threshold": torch.tensor(1.0)},
    }
    files = {}
    for name, content in contents.items():
        (work / name).mkdir()
        files[name] = work / name / "checkpoint.pt"
        torch.save(content, files[name])
    (work / "empty").mkdir()
    files["empty"] = work / "empty" / "checkpoint.pt"
    files["empty"].write_bytes(b"")
    run = work / "run"
    run.mkdir()
    config = {
        "format": "adasparse.run",
        "config": {"model": "mlp"},
        "dataset": {"num_classes": 10, "input_shape": [1, 8, 8]},
    }
    (run / "config.json").write_text(json.dumps(config))
    torch.save({"net.0.weight": torch.zeros(4, 4)}, run / "model_sparse.pt")
    torch.save({"format": "adasparse.checkpoint", "model": {}}, run / "checkpoint.pt")
    files["run"] = run
    return files


def _tied_lm() -> nn.Module:
    """An embedding and a language-model head sharing one weight."""
    model = nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 100, bias=False))
    model[1].weight = model[0].weight
    return model


def _cases(work: Path) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    truncated = work / "truncated.pt"
    buffer = io.BytesIO()
    torch.save({"format": "adasparse.checkpoint", "model": {"w": torch.ones(100)}}, buffer)
    truncated.write_bytes(buffer.getvalue()[:50])
    hostile = work / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"model": _Hostile()}))
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a run")
    not_safetensors = work / "model.safetensors"
    not_safetensors.write_bytes(b"\x00" * 64)
    untrusted = _untrusted(work)
    odd = _checkpoints(work)
    linear = nn.Linear(100, 100)
    sparse = adasparse.sparsify(nn.Linear(100, 100), target=0.5)
    with torch.device("meta"):
        meta_sparse = adasparse.sparsify(nn.Sequential(nn.Linear(100, 100)), target=0.5)
    nan_model = nn.Linear(100, 100)
    with torch.no_grad():
        nan_model.weight[0, 0] = float("nan")
    return [
        ("`train --starget 1.5`", lambda: _cli(["train", "--starget", "1.5"])),
        ("`train --starget -0.1`", lambda: _cli(["train", "--starget", "-0.1"])),
        ("`train --epochs -3`", lambda: _cli(["train", "--epochs", "-3"])),
        ("`train --epochs two`", lambda: _cli(["train", "--epochs", "two"])),
        ("`train --lr 0`", lambda: _cli(["train", "--lr", "0"])),
        ("`train --batch-size 0`", lambda: _cli(["train", "--batch-size", "0"])),
        ("`train --lv -1`", lambda: _cli(["train", "--lv", "-1"])),
        ("`train --ramp 1.5`", lambda: _cli(["train", "--ramp", "1.5"])),
        ("`train --dataset imagenet`", lambda: _cli(["train", "--dataset", "imagenet"])),
        ("`train --model resnet-50`", lambda: _cli(["train", "--model", "resnet-50"])),
        ("`train --method lottery`", lambda: _cli(["train", "--method", "lottery"])),
        ("`train --device tpu`", lambda: _cli(["train", "--device", "tpu"])),
        ("`train --gpu 0` (no CUDA here)", lambda: _cli(["train", "--gpu", "0"])),
        ("`train --gpu 0 --no-cuda`", lambda: _cli(["train", "--gpu", "0", "--no-cuda"])),
        (
            "`train --dataset cifar10` without the archive",
            lambda: _cli(["train", "--dataset", "cifar10", "--data-dir", str(work / "nodata")]),
        ),
        ("`train --resume` of a foreign directory", lambda: _cli(["train", "--resume", str(foreign)])),
        (
            "`train --out` an existing non-empty directory",
            lambda: _cli(["train", "--dataset", "digits", "--out", str(foreign)]),
        ),
        ("`report` of a missing path", lambda: _cli(["report", str(work / "missing")])),
        ("`report` of a truncated checkpoint", lambda: _cli(["report", str(truncated)])),
        ("`report` of a pickle with code in it", lambda: _cli(["report", str(hostile)])),
        ("`export` of a foreign directory", lambda: _cli(["export", str(foreign)])),
        ("`report` of a 0-byte checkpoint.pt", lambda: _cli(["report", str(odd["empty"])])),
        ("`export` of a 0-byte checkpoint.pt", lambda: _cli(["export", str(odd["empty"])])),
        ("`report` of a state dict with integer keys", lambda: _cli(["report", str(odd["integer_keys"])])),
        (
            "`report` of a 4-byte tensor expanded to 2^36 elements",
            lambda: _cli(["report", str(odd["expanded"])]),
        ),
        ("`report` of a sparse-layout tensor", lambda: _cli(["report", str(odd["sparse"])])),
        ("`export` of a zero-element `*_orig` tensor", lambda: _cli(["export", str(odd["empty_orig"])])),
        (
            "`export RUN --out RUN/checkpoint.pt`",
            lambda: _cli(["export", str(odd["run"]), "--out", str(odd["run"] / "checkpoint.pt")]),
        ),
        ("`export` of weights that do not fit the run's architecture", lambda: _cli(["export", str(odd["run"])])),
        ("`bench --jobs 0`", lambda: _cli(["bench", "--jobs", "0"])),
        ("`sparsify(model, target=1.0)`", lambda: _api(lambda: adasparse.sparsify(nn.Linear(100, 100), target=1.0))),
        ("`sparsify(model)` (no target)", lambda: _api(lambda: adasparse.sparsify(nn.Linear(100, 100)))),
        (
            "`sparsify(..., min_params=-1)`",
            lambda: _api(lambda: adasparse.sparsify(nn.Linear(100, 100), target=0.5, min_params=-1)),
        ),
        (
            "`sparsify` of a model with no prunable layer",
            lambda: _api(lambda: adasparse.sparsify(nn.Sequential(nn.ReLU()), target=0.5)),
        ),
        (
            "`sparsify(..., granularity='channel')` where no channel set reaches `min_params` weights",
            lambda: _api(
                lambda: adasparse.sparsify(
                    nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)),
                    target=0.5,
                    granularity="channel",
                    example_input=torch.randn(2, 8),
                )
            ),
        ),
        ("`sparsify` twice", lambda: _api(lambda: adasparse.sparsify(sparse, target=0.5))),
        ("`sparsify` with NaN weights", lambda: _api(lambda: adasparse.sparsify(nan_model, target=0.5))),
        (
            "`sparsify(..., include='typo')`",
            lambda: _api(lambda: adasparse.sparsify(nn.Sequential(nn.Linear(100, 100)), target=0.5, include="typo")),
        ),
        (
            "`sparsify` of a lazy module before its first forward",
            lambda: _api(lambda: adasparse.sparsify(nn.Sequential(nn.LazyLinear(100)), target=0.5)),
        ),
        (
            "`sparsify(..., exclude=nn.Embedding)` of an embedding tied to its LM head",
            lambda: _api(lambda: adasparse.sparsify(_tied_lm(), target=0.5, exclude=nn.Embedding)),
        ),
        (
            "`reset_thresholds` of a model still on the meta device",
            lambda: _api(lambda: adasparse.reset_thresholds(meta_sparse, target=0.5)),
        ),
        ("`SparsityLoss` on a plain model", lambda: _api(lambda: adasparse.SparsityLoss(linear, target=0.9))),
        (
            "`SparsityLoss(..., mode='budget')`",
            lambda: _api(lambda: adasparse.SparsityLoss(sparse, target=0.9, mode="budget")),
        ),
        ("`SparsityLoss(..., weight=-1)`", lambda: _api(lambda: adasparse.SparsityLoss(sparse, target=0.9, weight=-1))),
        ("`desparsify` of a plain model", lambda: _api(lambda: adasparse.desparsify(nn.Linear(10, 10)))),
        ("`calibrate` of a plain model", lambda: _api(lambda: adasparse.calibrate(linear, 0.9))),
        (
            "`load_sparse` of a file that is not safetensors",
            lambda: _api(lambda: adasparse.load_sparse(not_safetensors)),
        ),
        (
            "`load_sparse` of a 500-byte file declaring a `[1, 2**30]` CSR tensor",
            lambda: _api(lambda: adasparse.load_sparse(untrusted["gigabytes"])),
        ),
        ("`load_sparse`: `data_offsets: []`", lambda: _api(lambda: adasparse.load_sparse(untrusted["offsets"]))),
        ('`load_sparse`: `__metadata__: ["x"]`', lambda: _api(lambda: adasparse.load_sparse(untrusted["metadata"]))),
        ("`load_sparse`: a list in `keys`", lambda: _api(lambda: adasparse.load_sparse(untrusted["keys"]))),
        (
            "`load_sparse`: shape `[2**62, 2**62]`",
            lambda: _api(lambda: adasparse.load_sparse(untrusted["shape"], max_bytes=None)),
        ),
        (
            "assigning a plain tensor to a sparsified weight",
            lambda: _api(lambda: setattr(sparse, "weight", torch.zeros(100, 100))),
        ),
    ]


def main_() -> None:
    with tempfile.TemporaryDirectory() as directory:
        rows = []
        for label, case in _cases(Path(directory)):
            outcome, message = case()
            message = message.replace(directory, "…").replace("|", "\\|")
            rows.append(f"| {label} | {outcome} | {message} |")
    table = "\n".join(["| input | outcome | message |", "|---|---|---|", *rows])
    body = (
        "Generated by `python benchmarks/bad_inputs.py`: every bad input we know of, and what the user gets. "
        "Command-line errors are one line on stderr with exit status 2, never a traceback; library errors are "
        "`ValueError`/`TypeError` naming the argument and what is allowed.\n\n" + table + "\n"
    )
    print(body)
    write_section(Path(__file__).resolve().parent.parent / "docs" / "reliability.md", "bad-inputs", body)


if __name__ == "__main__":
    main_()
