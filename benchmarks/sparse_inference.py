"""CPU inference time and file size of pruned models: sparse kernels and compressed checkpoints against dense.

All ratios are time (or bytes) over the dense model's, measured side by side in one run: the variants of one
table cell are called in turn (in a shuffled order), round after round, and each ratio is a ratio of medians.
Run at one thread and at torch's default thread count.

    python benchmarks/sparse_inference.py                  # speed + storage tables into docs/benchmarks.md
    python benchmarks/sparse_inference.py --break-even     # the break-even table shipped in adasparse.export.inference
    python benchmarks/sparse_inference.py --quick --no-write

Variants for one Linear layer: dense ``F.linear``; torch CSR int32 as ``torch.mm(W_csr, x.T).T + b``; scipy CSR
(``(W @ x.T).T + b``, single-threaded); and what :func:`adasparse.to_sparse_inference` makes of the layer for that
batch size (a ``SparseLinear``, or the dense layer left alone).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section

import adasparse
from adasparse.app.models import create_model
from adasparse.export import dense_size, save_sparse
from adasparse.export.inference import SparseLinear

try:
    import scipy.sparse as scipy_sparse
except ImportError:
    scipy_sparse = None

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
BATCHES = (1, 32, 256)
BREAK_EVEN_SIDES = (256, 512, 1024, 2048, 4096)
BREAK_EVEN_BATCHES = (1, 8, 32, 256)
BREAK_EVEN_SPARSITIES = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
BREAK_EVEN_RATIO = 0.9


def interleaved(functions: dict[str, Callable[[], object]], seconds: float, min_rounds: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn, round after round.

    The order is shuffled every round, so that no variant always runs with the caches its predecessor left.
    """
    shuffler = random.Random(0)
    names = list(functions)
    for function in functions.values():
        function()
    start = time.perf_counter()
    for function in functions.values():
        function()
    per_round = time.perf_counter() - start
    rounds = max(min_rounds, min(300, int(seconds / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        shuffler.shuffle(names)
        for name in names:
            function = functions[name]
            begin = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()}


def pruned_linear(out_features: int, in_features: int, sparsity: float, seed: int = 0) -> nn.Linear:
    """An ``nn.Linear`` with exactly ``round(sparsity * numel)`` zeros at random positions."""
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_features, in_features, generator=generator) / math.sqrt(in_features))
        zeros = torch.randperm(layer.weight.numel(), generator=generator)[: round(sparsity * layer.weight.numel())]
        layer.weight.view(-1)[zeros] = 0.0
    return layer.eval()


def pruned_model(name: str, sparsity: float) -> nn.Module:
    """A model pruned with the library on its random initial weights: sparsify, calibrate, desparsify."""
    torch.manual_seed(0)
    if name == "MLP 784-300-100-10":
        model: nn.Module = nn.Sequential(
            nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    elif name == "MLP 784-4096-4096-10":
        model = nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    elif name == "CNN2d 1×28×28 (conv32-conv64-pool-fc128-fc10)":
        model = create_model("cnn2d", num_classes=10, input_shape=(1, 28, 28))
    else:
        raise ValueError(name)
    adasparse.sparsify(model, target=sparsity, trainable=False)
    adasparse.calibrate(model, sparsity)
    return adasparse.desparsify(model).eval()


MODEL_INPUTS = {
    "MLP 784-300-100-10": (784,),
    "MLP 784-4096-4096-10": (784,),
    "CNN2d 1×28×28 (conv32-conv64-pool-fc128-fc10)": (1, 28, 28),
}


def linear_variants(layer: nn.Linear, batch: int) -> tuple[dict[str, Callable[[], object]], str]:
    x = torch.randn(batch, layer.in_features)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    csr = weight.to_sparse_csr()
    csr = torch.sparse_csr_tensor(
        csr.crow_indices().int(), csr.col_indices().int(), csr.values(), weight.shape, check_invariants=False
    )
    chosen = adasparse.to_sparse_inference(copy.deepcopy(layer), batch_size_hint=batch)
    functions: dict[str, Callable[[], object]] = {
        "dense": lambda: F.linear(x, weight, bias),
        "torch CSR": lambda: torch.mm(csr, x.T).T + bias,
        "adasparse": lambda: chosen(x),
    }
    if scipy_sparse is not None:
        matrix = scipy_sparse.csr_matrix(
            (csr.values().numpy(), csr.col_indices().numpy(), csr.crow_indices().numpy()), shape=tuple(weight.shape)
        )
        x_numpy, bias_numpy = x.numpy(), bias.numpy()
        functions["scipy"] = lambda: torch.from_numpy((matrix @ x_numpy.T).T + bias_numpy)
    return functions, "sparse" if isinstance(chosen, SparseLinear) else "dense"


def _ratio(times: dict[str, float], name: str) -> str:
    return f"{times[name] / times['dense']:.2f}" if name in times else "–"


def linear_table(threads: int, sides: tuple[int, ...], seconds: float) -> str:
    torch.set_num_threads(threads)
    rows = [
        "| layer | batch | sparsity | dense (ms) | torch CSR int32 | scipy CSR | to_sparse_inference | its choice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with torch.no_grad():
        for side in sides:
            for batch in BATCHES:
                for sparsity in SPARSITIES:
                    functions, choice = linear_variants(pruned_linear(side, side, sparsity), batch)
                    times = interleaved(functions, seconds)
                    rows.append(
                        f"| Linear {side}² | {batch} | {sparsity:.2f} | {times['dense'] * 1e3:.3f} | "
                        f"{_ratio(times, 'torch CSR')} | {_ratio(times, 'scipy')} | {_ratio(times, 'adasparse')} "
                        f"| {choice} |"
                    )
                    print(rows[-1], flush=True)
    return "\n".join(rows)


def model_table(threads: int, names: tuple[str, ...], sparsity: float, seconds: float) -> str:
    torch.set_num_threads(threads)
    rows = [
        "| model | batch | dense (ms) | to_sparse_inference / dense | Linear layers made sparse |",
        "|---|---|---|---|---|",
    ]
    with torch.no_grad():
        for name in names:
            dense = pruned_model(name, sparsity)
            for batch in BATCHES:
                sparse = adasparse.to_sparse_inference(copy.deepcopy(dense), batch_size_hint=batch)
                converted = [n for n, m in sparse.named_modules() if isinstance(m, SparseLinear)]
                total = sum(1 for m in dense.modules() if type(m) is nn.Linear)
                x = torch.randn(batch, *MODEL_INPUTS[name])
                torch.testing.assert_close(sparse(x), dense(x), rtol=1e-4, atol=1e-4)
                functions: dict[str, Callable[[], object]] = {
                    "dense": lambda dense=dense, x=x: dense(x),
                    "sparse": lambda sparse=sparse, x=x: sparse(x),
                }
                times = interleaved(functions, seconds)
                rows.append(
                    f"| {name} | {batch} | {times['dense'] * 1e3:.3f} | {_ratio(times, 'sparse')} | "
                    f"{len(converted)} of {total} ({', '.join(converted) or 'none'}) |"
                )
                print(rows[-1], flush=True)
    return "\n".join(rows)


def _onnx_size(model: nn.Module, example: torch.Tensor, path: Path) -> int | None:
    try:
        from adasparse.export.onnx_export import export_onnx

        return export_onnx(model, example, path).stat().st_size
    except ImportError:
        return None


def storage_table(sparsities: tuple[float, ...]) -> str:
    rows = [
        "| weights | sparsity | torch.save dense (bytes) | save_sparse fp32 / dense | save_sparse fp16 / dense "
        "| encodings (fp32) | ONNX / dense |",
        "|---|---|---|---|---|---|---|",
    ]
    inputs = {"Linear 4096²": (4096,), **MODEL_INPUTS}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("Linear 4096²", "MLP 784-300-100-10", "CNN2d 1×28×28 (conv32-conv64-pool-fc128-fc10)"):
            for sparsity in sparsities:
                source = pruned_linear(4096, 4096, sparsity) if name == "Linear 4096²" else pruned_model(name, sparsity)
                onnx_bytes = _onnx_size(source, torch.zeros(1, *inputs[name]), Path(tmp) / "m.onnx")
                state = source.state_dict()
                dense = dense_size(state)
                sizes = {}
                for label, values_dtype in (("fp32", None), ("fp16", torch.float16)):
                    path = Path(tmp) / f"{label}.safetensors"
                    header = save_sparse(state, path, values_dtype=values_dtype)
                    sizes[label] = path.stat().st_size
                    if values_dtype is None:
                        encodings = sorted({entry["encoding"] for entry in header["tensors"].values()})
                onnx_ratio = "–" if onnx_bytes is None else f"{onnx_bytes / dense:.3f}"
                rows.append(
                    f"| {name} | {sparsity:.2f} | {dense:,} | {sizes['fp32'] / dense:.3f} | "
                    f"{sizes['fp16'] / dense:.3f} | {', '.join(encodings)} | {onnx_ratio} |"
                )
                print(rows[-1], flush=True)
    return "\n".join(rows)


def break_even_cell(side: int, batch: int, seconds: float) -> tuple[float | None, list[float]]:
    """Sparsity where a SparseLinear's time falls to 0.9x dense (interpolated), and the measured ratios."""
    x = torch.randn(batch, side)
    functions: dict[str, Callable[[], object]] = {}
    dense = pruned_linear(side, side, 0.0)
    functions["dense"] = lambda: dense(x)
    for sparsity in BREAK_EVEN_SPARSITIES:
        layer = SparseLinear.from_linear(pruned_linear(side, side, sparsity))
        functions[str(sparsity)] = lambda layer=layer: layer(x)
    times = interleaved(functions, seconds)
    ratios = [times[str(s)] / times["dense"] for s in BREAK_EVEN_SPARSITIES]
    first = None
    for index in range(len(ratios) - 1, -1, -1):
        if ratios[index] > BREAK_EVEN_RATIO:
            break
        first = index
    if first is None:
        return None, ratios
    if first == 0:
        return BREAK_EVEN_SPARSITIES[0], ratios
    s0, s1 = BREAK_EVEN_SPARSITIES[first - 1], BREAK_EVEN_SPARSITIES[first]
    r0, r1 = ratios[first - 1], ratios[first]
    value = s0 + (r0 - BREAK_EVEN_RATIO) / (r0 - r1) * (s1 - s0)
    return math.ceil(value * 100 - 1e-9) / 100, ratios


def break_even_table(seconds: float) -> tuple[str, str]:
    """The markdown table and the Python literal of ``adasparse.export.inference.BREAK_EVEN`` at the current threads."""
    literal = ["BREAK_EVEN: dict[int, dict[int, Optional[float]]] = {"]
    markdown = [
        "| square side | " + " | ".join(f"batch {b}" for b in BREAK_EVEN_BATCHES) + " |",
        "|---|" + "---|" * len(BREAK_EVEN_BATCHES),
    ]
    details = [
        "",
        "Measured ratios (SparseLinear / dense) at sparsity " + ", ".join(map(str, BREAK_EVEN_SPARSITIES)) + ":",
        "",
    ]
    with torch.no_grad():
        for side in BREAK_EVEN_SIDES:
            cells: dict[int, float | None] = {}
            for batch in BREAK_EVEN_BATCHES:
                cells[batch], ratios = break_even_cell(side, batch, seconds)
                line = f"{side}² batch {batch}: {' '.join(f'{r:.2f}' for r in ratios)}"
                details.append(f"- {line}")
                print(f"{line} -> {cells[batch]}", flush=True)
            literal.append(f"    {side}: {{{', '.join(f'{b}: {cells[b]}' for b in BREAK_EVEN_BATCHES)}}},")
            markdown.append(
                f"| {side} | " + " | ".join("–" if cells[b] is None else f"{cells[b]:.2f}" for b in cells) + " |"
            )
    literal.append("}")
    return "\n".join(markdown + details), "\n".join(literal)


def machine(threads: int) -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"default threads {threads}, load average at start {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--break-even", action="store_true", help="measure the break-even table instead")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and only the 1024² layer (a smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="measuring time per variant and cell")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="the multi-thread setting")
    parser.add_argument(
        "--break-even-threads", type=int, default=1, help="torch threads for --break-even (default 1, as shipped)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.05 if args.quick else 0.4)
    settings = {"1": 1} if args.threads <= 1 else {"1": 1, "multi": args.threads}
    command = "python benchmarks/sparse_inference.py" + (" --break-even" if args.break_even else "")
    if args.break_even and args.break_even_threads != 1:
        command += f" --break-even-threads {args.break_even_threads}"
    if args.seconds is not None:
        command += f" --seconds {args.seconds}"
    header = (
        f"Machine: {machine(args.threads)}. Ratios are medians of interleaved calls (shuffled order each round) "
        f"in one run, about {seconds:g} s of calls per variant and cell; below 1 is faster than dense. Random "
        "unstructured zeros.\n\n"
        f"Command: `{command}`\n"
    )
    if args.break_even:
        torch.set_num_threads(args.break_even_threads)
        table, literal = break_even_table(seconds)
        print(literal)
        body = (
            f"{header}\nAt {args.break_even_threads} thread(s): the sparsity at which a SparseLinear takes "
            f"{BREAK_EVEN_RATIO}× the dense time (interpolated between the measured sparsities; 0.50 means already "
            f"at 0.5, – never up to {BREAK_EVEN_SPARSITIES[-1]}).\n\n{table}\n"
        )
        if not args.no_write:
            write_section(DOCS, "sparse-inference-break-even", body)
        return

    sides = (1024,) if args.quick else (1024, 4096)
    models = ("MLP 784-300-100-10",) if args.quick else tuple(MODEL_INPUTS)
    parts = [header]
    for threads in settings.values():
        label = "1 thread" if threads == 1 else f"{threads} threads (default)"
        parts.append(f"\n### One Linear layer, {label}\n\n{linear_table(threads, sides, seconds)}\n")
    for threads in settings.values():
        label = "1 thread" if threads == 1 else f"{threads} threads (default)"
        parts.append(
            f"\n### Whole models at 95% sparsity, {label}\n\nPruned with `sparsify(target=0.95, trainable=False)` + "
            f"`calibrate(0.95)` + `desparsify` on their random initial weights; convolutions stay dense.\n\n"
            f"{model_table(threads, models, 0.95, seconds)}\n"
        )
    torch.set_num_threads(args.threads)
    body = "".join(parts)
    storage = (
        "Sizes relative to `torch.save(state_dict)` of the same dense float32 weights (whole file, header "
        "included). fp16: `save_sparse(..., values_dtype=torch.float16)` (lossy). Models pruned as above; the "
        "sparsity is that of the pruned layers (biases and normalisation parameters stay dense). ONNX: "
        "`export_onnx` of the same model; plain ONNX stores the zeros densely.\n\n"
        f"Command: `{command}`\n\n{storage_table((0.5, 0.9, 0.95, 0.98))}\n"
    )
    print(body)
    print(storage)
    if not args.no_write:
        write_section(DOCS, "sparse-inference", body)
        write_section(DOCS, "storage", storage)


if __name__ == "__main__":
    main()
