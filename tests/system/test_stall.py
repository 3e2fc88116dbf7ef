"""The stall inspector and abort-on-error: a stuck or failing rank ends the whole job promptly."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, mpiexec, write_windows

STUCK = """
import time, numpy as np
from hpcrnn.comm import world, allreduce_sum
comm = world()
if comm.rank == 1:
    time.sleep(120)
allreduce_sum(comm, np.ones(10), timeout_s=2.0)
"""


def test_stuck_rank_is_named_and_job_aborts():
    start = time.perf_counter()
    result = subprocess.run([mpiexec(), "-n", "3", sys.executable, "-c", STUCK], capture_output=True, text=True,
                            timeout=100)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert "missing rank(s): [1]" in result.stderr, result.stderr
    assert elapsed < 30, elapsed


HOLD = """
import os, sys, time
from mpi4py import MPI
import hpcrnn.model
calls, original = [0], hpcrnn.model.Model.forward_backward
def held(self, *args, **kw):
    calls[0] += 1
    if MPI.COMM_WORLD.rank == 1 and calls[0] == 3:      # rank 1 never finishes its 3rd step
        with open(sys.argv[1] + ".tmp", "w") as handle:
            handle.write(repr(time.time()))
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(300)
    return original(self, *args, **kw)
hpcrnn.model.Model.forward_backward = held
from hpcrnn.cli import main
sys.exit(main(sys.argv[2:]))
"""
COMM_TIMEOUT_S = 3


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True], ids=["fused", "overlap"])
def test_rank_held_in_training_step_is_named_within_the_timeout(tmp_path, overlap):
    """Rank 1 is held inside forward/backward at step 3: rank 0 waits in the gradient Allreduce, and the stall
    inspector must end the job and name rank 1 within ~10 s of train.comm_timeout_s."""
    data = write_windows(str(tmp_path / "d.h5"), n=64, seq_len=5)
    marker = tmp_path / "held-at"
    args = [mpiexec(), "-n", "2", sys.executable, "-c", HOLD, str(marker), "train", "--data", data,
            "--run-dir", str(tmp_path / "run"), "--cell", "lstm", "--hidden", 4, "--batch-size", 8, "--epochs", 1,
            "--set", "train.progress=none", "--set", "data.val_fraction=0", "--set", f"train.overlap={overlap}",
            "--set", f"train.comm_timeout_s={COMM_TIMEOUT_S}"]
    job = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=ROOT, start_new_session=True)
    out, err = end_of(job, marker, COMM_TIMEOUT_S + 10)
    assert marker.exists(), f"rank 1 never reached its 3rd Model.forward_backward:\n{out[-2000:]}{err[-2000:]}"
    after_hold = time.time() - float(marker.read_text())
    assert after_hold < COMM_TIMEOUT_S + 10, f"job ended {after_hold:.1f} s after rank 1 was held\n{err[-2000:]}"
    assert job.returncode != 0, out[-2000:] + err[-2000:]
    assert "missing rank(s): [1]" in err, err[-3000:]


def end_of(job, marker, after_s, startup_s=120):
    """Waits for the job to start holding (the marker file), then at most after_s for it to end; kills it
    (its whole process group) if it has not. Returns (stdout, stderr)."""
    deadline = time.time() + startup_s
    while not marker.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if marker.exists():
        deadline = float(marker.read_text()) + after_s
    try:
        return job.communicate(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        return job.communicate()
