"""Placement end to end: `mpiexec -bind-to core -n 2 hpcrnn train` gives each rank one core of its own (as
summary.json records it) and no warning; unbound ranks on a multi-core machine share cores and rank 0 says so."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, mpiexec, write_windows
from hpcrnn.placement import launcher_flavour

TRAIN = ["train", "--cell", "lstm", "--hidden", "8", "--epochs", "1", "--batch-size", "8",
         "--set", "data.val_fraction=0", "--set", "train.progress=none"]


def train_bound(tmp_path, data, bind):
    run_dir = tmp_path / ("bound" if bind else "unbound")
    command = [mpiexec(), *(["-bind-to", "core"] if bind else []), "-n", "2", sys.executable, "-m", "hpcrnn",
               *TRAIN, "--data", str(data), "--run-dir", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    with open(run_dir / "summary.json") as handle:
        return json.load(handle)["per_rank"], result.stdout


@pytest.mark.skipif(launcher_flavour([mpiexec()]) != "mpich", reason="needs MPICH's hydra mpiexec")
def test_bind_to_core_gives_each_rank_its_own_core(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 cores")
    data = write_windows(str(tmp_path / "d.h5"), n=32)
    per_rank, out = train_bound(tmp_path, data, bind=True)
    affinities = [r["affinity"] for r in per_rank]
    assert [len(a) for a in affinities] == [1, 1] and affinities[0] != affinities[1], affinities
    assert all(a[0] in cores for a in affinities) and "share cores" not in out
    per_rank, out = train_bound(tmp_path, data, bind=False)
    if per_rank[0]["affinity"] == per_rank[1]["affinity"]:     # hydra left them unbound: they share every core
        assert "warning: ranks share cores" in out and "ranks 0, 1" in out
