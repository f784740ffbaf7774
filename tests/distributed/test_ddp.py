"""DistributedDataParallel on CPU (gloo, loopback): thresholds stay in sync and the result matches one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import adasparse
from adasparse.app import distributed
from adasparse.app.data import load_dataset
from adasparse.app.data.loader import BatchLoader
from adasparse.app.models import create_model

from ..commands import train_digits_mlp

pytest.importorskip("sklearn")
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

STEPS, BATCH = 12, 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(rank: int, world_size: int, batch: int, out: str, port: int, mode: str) -> None:
    """A few sparse-training steps of an MLP on digits; every rank saves all its parameters."""
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, input_shape=data.input_shape)
    adasparse.sparsify(model, target=0.9)
    criterion = adasparse.SparsityLoss(model, target=0.9, mode=mode, correction=True, correction_interval=3)
    optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.05, weight_decay=5e-4), lr=0.05, momentum=0.9)
    forward = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    loader = BatchLoader(
        data.x_train,
        data.y_train,
        batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
        shard=(rank, world_size),
    )
    for step, (x, y) in enumerate(loader):
        if step == STEPS:
            break
        loss = F.cross_entropy(forward(x), y) + criterion()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        criterion.step()  # the projection mode moves the thresholds here, identically on every rank
    masks = {p.name: (p.effective() == 0) for p in adasparse.pruned_tensors(model)}
    torch.save(
        {
            "params": {k: v.detach() for k, v in model.named_parameters()},
            "masks": masks,
            "multiplier": criterion.multiplier,
        },
        Path(out) / f"rank{rank}.pt",
    )
    if world_size > 1:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["constraint", "projection"])
def test_ranks_stay_identical_and_match_a_single_process(tmp_path: Path, mode: str) -> None:
    distributed, single = tmp_path / "ddp", tmp_path / "single"
    distributed.mkdir()
    single.mkdir()
    mp.spawn(_train, args=(2, BATCH, str(distributed), _free_port(), mode), nprocs=2, join=True)
    threads = torch.get_num_threads()
    try:
        _train(0, 1, 2 * BATCH, str(single), 0, mode)  # in this process: it sets one thread, as the workers do
    finally:
        torch.set_num_threads(threads)
    rank0 = torch.load(distributed / "rank0.pt", weights_only=True)
    rank1 = torch.load(distributed / "rank1.pt", weights_only=True)
    alone = torch.load(single / "rank0.pt", weights_only=True)
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), name  # weights and thresholds in sync
        torch.testing.assert_close(value, alone["params"][name], rtol=1e-4, atol=1e-5, msg=name)
    for name, mask in rank0["masks"].items():
        assert torch.equal(mask, rank1["masks"][name]), name
        assert (mask != alone["masks"][name]).float().mean() < 1e-3, name  # a weight on a threshold may differ
    assert rank0["multiplier"] == rank1["multiplier"]
    assert rank0["multiplier"] == pytest.approx(alone["multiplier"], rel=1e-4, abs=1e-6)
    assert any(name.endswith("_threshold") for name in rank0["params"])


def _torchrun_command(*arguments: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "adasparse",
        *arguments,
    ]


def torchrun(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        _torchrun_command(*arguments), capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_only_rank_0_prints(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RANK", raising=False)
    distributed.print_main("lone")
    monkeypatch.setenv("RANK", "0")
    distributed.print_main("rank 0")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main_process()
    distributed.print_main("rank 1")
    assert capsys.readouterr().out == "lone\nrank 0\n"


def _cli_options(epochs: int, *options: str) -> list[str]:
    """A short CPU run of the MLP on digits, as both torchrun tests start it."""
    return train_digits_mlp(epochs, "--batch-size", "64", "--no-cuda", "--quiet", "--no-dense-baseline", *options)


def test_torchrun_cli_writes_once_and_resumes(tmp_path: Path) -> None:
    options = _cli_options(3)
    completed = torchrun(*options, "--out", str(tmp_path / "run"))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.count("overall (pruned layers)") == 1  # only rank 0 prints
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"world_size": 2' in config
    resumed = torchrun("train", "--resume", str(tmp_path / "run"), "--quiet")
    assert resumed.returncode == 0 and "already complete" in resumed.stdout


def test_torchrun_job_killed_mid_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    options = _cli_options(4, "--seed", "3")
    assert torchrun(*options, "--out", str(tmp_path / "straight")).returncode == 0
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        _torchrun_command(*options, "--out", str(run)),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and job.poll() is None:
            if (run / "checkpoint.pt").exists():
                epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
                if epoch >= 1:
                    break
            time.sleep(0.1)
        assert job.poll() is None, "the job ended before it could be killed"
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and both workers
    finally:
        job.wait(timeout=60)
    assert not (run / "model_sparse.pt").exists()
    resumed = torchrun("train", "--resume", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = torch.load(tmp_path / "straight" / "model_sparse.pt", weights_only=True)
    got = torch.load(run / "model_sparse.pt", weights_only=True)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
