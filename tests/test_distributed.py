"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")
COMMON = ["--dataset", "digits", "--spec", "64-64-10", "--epochs", "10", "--float-act",
          "--lr-start", "0.01", "--batch-size", "50",
          "--device", "cpu"]
pytestmark = pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"),
                                reason="torchrun is not installed")


def _train(out: Path, seed: int, processes: int, *extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launch = ([str(TORCHRUN), "--standalone", f"--nproc-per-node={processes}", "-m"]
              if processes > 1 else [sys.executable, "-m"])
    r = subprocess.run([*launch, "bchw.cli", "train", *COMMON, "--seed", str(seed), "--out",
                        str(out), *extra], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_two_processes_train_like_one_in_expectation(tmp_path):
    single, parallel = [], []
    for seed in (0, 1):
        single.append(_train(tmp_path / f"one{seed}", seed, 1)["test_accuracy"])
        m = _train(tmp_path / f"two{seed}", seed, 2)
        assert m["processes"] == 2
        parallel.append(m["test_accuracy"])
    # Same updates but for per-rank batch statistics: the same accuracy within noise.
    assert min(single + parallel) > 0.75
    assert abs(sum(single) / 2 - sum(parallel) / 2) < 0.04, (single, parallel)


def test_stochastic_data_parallel_run_keeps_replicas_identical(tmp_path):
    # The run ends by comparing the replicas' weights (it fails if they diverged);
    # only rank 0 writes.
    m = _train(tmp_path / "stoch", 0, 2, "--binarize", "stoch")
    assert m["processes"] == 2 and m["test_accuracy"] > 0.5
    assert sorted(p.name for p in (tmp_path / "stoch").iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.json"]


def test_batch_must_split_evenly_over_processes(tmp_path):
    with pytest.raises(AssertionError, match="batch_size"):
        _train(tmp_path / "odd", 0, 2, "--batch-size", "33")
