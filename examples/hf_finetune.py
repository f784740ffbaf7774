"""Fine-tune a (tiny) Hugging Face BERT classifier with AdamW in a plain loop, pruned to 90% by adasparse.Pruner.

No download: the model is built from a local ``BertConfig`` (2 layers, hidden size 64) and the data are
scikit-learn's bundled handwritten digits read as token sequences (each 8x8 image becomes ``[CLS]`` + 16 tokens,
the mean intensities 0-16 of its 2x2 cells). The loop is any AdamW fine-tuning loop with the Pruner's lines
added; the thresholds are not in the optimizer (the pruner moves them itself), so nothing depends on AdamW's
settings. Runs in well under a minute on 2 CPU cores. (A 2-layer BERT trained from scratch on 1437 such
sequences is a weak digit classifier: about 0.65 test accuracy dense, a few points less at 90% sparsity; the
point is the loop.)

    python examples/hf_finetune.py [--target 0.9] [--epochs 16] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from transformers import BertConfig, BertForSequenceClassification

import adasparse

PAD, CLS, OFFSET = 0, 1, 2  # token ids: padding, [CLS], then the 17 pixel intensities


def load(seed: int) -> tuple[torch.Tensor, ...]:
    """Token ids ``(N, 17)`` and labels, split 80/20 with ``seed``: ``[CLS]`` and the 16 cells of the 4x4
    average-pooled image, each cell's mean intensity rounded to 0..16."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8) intensities 0..16
    cells = F.avg_pool2d(images, 2).round().long().flatten(1)  # (1797, 16)
    tokens = torch.cat([torch.full((len(cells), 1), CLS), cells + OFFSET], dim=1)
    labels = torch.tensor(data.target)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    test, train = order[:360], order[360:]
    return tokens[train], labels[train], tokens[test], labels[test]


def build_model(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=OFFSET + 17,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=10,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


@torch.no_grad()
def accuracy(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(input_ids=tokens).logits.argmax(1) == labels).float().mean().item()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9, help="overall sparsity in [0, 1) (default 0.9)")
    parser.add_argument("--epochs", type=int, default=16, help="training epochs (default 16)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate (default 3e-3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load(args.seed)
    model = build_model(args.seed)
    batches = -(-len(x_train) // args.batch_size)
    total_steps = batches * args.epochs if args.max_steps is None else min(args.max_steps, batches * args.epochs)

    pruner = adasparse.Pruner(model, target=args.target, total_steps=total_steps)  # sparsifies the Linear layers
    optimizer = torch.optim.AdamW(pruner.param_groups(lr=args.lr, weight_decay=0.01))
    warmup = max(1, total_steps // 10)  # post-LayerNorm BERT wants a warm-up from scratch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, (total_steps - step) / (total_steps - warmup + 1))
    )
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    while step < total_steps:
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for begin in range(0, len(order), args.batch_size):
            batch = order[begin : begin + args.batch_size]
            logits = model(input_ids=x_train[batch]).logits
            loss = F.cross_entropy(logits, y_train[batch]) + pruner.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pruner.step()  # after optimizer.step(), before the next zero_grad
            schedule.step()
            step += 1
            if step == total_steps:
                break
    model = pruner.finish()  # a plain BertForSequenceClassification, exactly `target` of its pruned weights zero

    result = pruner.result
    assert result is not None
    print(result.report)
    print()
    print(result)
    figures = {
        "test_accuracy": accuracy(model, x_test, y_test),
        "sparsity": result.sparsity,
        "steps": float(total_steps),
        "seconds": time.perf_counter() - start,
    }
    print(
        f"test accuracy {figures['test_accuracy']:.4f} at sparsity {figures['sparsity']:.4f} "
        f"({total_steps} AdamW steps, {figures['seconds']:.1f} s)"
    )
    return figures


if __name__ == "__main__":
    main()
