"""A training process killed at the worst moment: during a checkpoint write. The previous checkpoint survives,
the run resumes, and it ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from adasparse.app.train import TrainConfig, run_training

pytest.importorskip("sklearn")

OPTIONS = dict(dataset="digits", model="mlp", epochs=4, batch_size=128, device="cpu", seed=5)

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    import adasparse.core._io as io_module
    from adasparse.app.train import TrainConfig, run_training

    real_fdopen = io_module.os.fdopen
    writes = {"checkpoint": 0}

    class SlowFile:
        def __init__(self, handle):
            self.handle = handle
        def write(self, data):
            half = len(data) // 2
            self.handle.write(data[:half])
            self.handle.flush()
            time.sleep(60)  # killed here, half-way through the second checkpoint
            return self.handle.write(data[half:])
        def __getattr__(self, name):
            return getattr(self.handle, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if ".checkpoint.pt." in name:
            writes["checkpoint"] += 1
            if writes["checkpoint"] == 2:
                return SlowFile(handle)
        return handle

    io_module.os.fdopen = fdopen
    torch.set_num_threads(int(sys.argv[2]))  # the test's own setting: results depend on the thread count
    run_training(TrainConfig(**OPTIONS), sys.argv[1], progress=False, log=lambda message: None)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to spot the checkpoint being written")
def test_kill_during_checkpoint_write_then_resume(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_training(TrainConfig(**OPTIONS), straight, progress=False, log=lambda message: None)

    run = tmp_path / "killed"
    script = tmp_path / "driver.py"
    script.write_text(f"OPTIONS = {OPTIONS!r}\n" + DRIVER)
    threads = str(torch.get_num_threads())
    process = subprocess.Popen([sys.executable, str(script), str(run), threads], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            partial = [p for p in run.glob(".checkpoint.pt.*.tmp") if p.stat().st_size > 0] if run.exists() else []
            if partial and (run / "checkpoint.pt").exists():
                break
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the second checkpoint write never started")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()

    state = torch.load(run / "checkpoint.pt", weights_only=True)  # the previous checkpoint, intact
    assert state["epoch"] == 1
    assert list(run.glob(".checkpoint.pt.*.tmp")), "the half-written file should still be there before the resume"
    run_training(TrainConfig(), run, resume=True, progress=False, log=lambda message: None)
    assert not list(run.glob(".*.tmp"))
    expected = torch.load(straight / "model_sparse.pt", weights_only=True)
    resumed = torch.load(run / "model_sparse.pt", weights_only=True)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
