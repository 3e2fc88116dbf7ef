"""The test harness itself (tests/conftest.py): under mpiexec a failure on one rank ends the whole job at once and
each test has a time limit; with HPCRNN_REQUIRE_EXTRAS=1 (make test) missing extras fail instead of skipping."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, mpiexec

FAILING = """
import time
import numpy as np
import pytest
from mpi4py import MPI

WORLD = MPI.COMM_WORLD


def test_rank_1_fails_before_a_collective():
    assert WORLD.rank != 1, "planted failure on rank 1"
    WORLD.Barrier()


def test_not_reached():
    WORLD.Barrier()
"""

HANGING = """
import time
import numpy as np
import pytest
from mpi4py import MPI

WORLD = MPI.COMM_WORLD


@pytest.mark.mpi_timeout(3)
def test_rank_1_sleeps_while_rank_0_waits():
    if WORLD.rank == 1:
        time.sleep(120)
    WORLD.Barrier()


@pytest.mark.mpi_timeout(3)
def test_both_ranks_stuck_in_mpi():
    WORLD.Recv(np.zeros(1), source=1 - WORLD.rank)
"""


def run_suite(tmp_path, text, *pytest_args, ranks=2, timeout=90, env=None):
    """Runs pytest on `text` (one test file next to a copy of tests/conftest.py) under mpiexec -n ranks, or
    serially with ranks=0; returns (returncode, stdout + stderr, seconds)."""
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_planted.py").write_text(text)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_planted.py", *pytest_args]
    if ranks:
        command = [mpiexec(), "-n", str(ranks), *command]
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, _ = job.communicate()
        pytest.fail(f"the job did not end within {timeout} s:\n{out[-3000:]}")
    return job.returncode, out, time.perf_counter() - started


def test_failure_on_one_rank_before_a_collective_aborts_the_job(tmp_path):
    code, out, seconds = run_suite(tmp_path, FAILING)
    assert code != 0, out
    assert seconds < 20, f"{seconds:.1f} s\n{out[-3000:]}"
    assert "rank 1 of 2: FAILED test_planted.py::test_rank_1_fails_before_a_collective (call)" in out, out[-3000:]
    assert "planted failure on rank 1" in out, out[-3000:]


def test_rank_held_in_python_fails_at_its_time_limit(tmp_path):
    code, out, seconds = run_suite(tmp_path, HANGING, "-k", "sleeps")
    assert code != 0, out
    assert seconds < 20, f"{seconds:.1f} s\n{out[-3000:]}"
    assert "over its time limit of 3 s on rank 1" in out, out[-3000:]


def test_ranks_stuck_in_mpi_are_ended_by_the_hard_limit(tmp_path):
    code, out, seconds = run_suite(tmp_path, HANGING, "-k", "stuck")
    assert code != 0, out
    assert seconds < 25, f"{seconds:.1f} s\n{out[-3000:]}"
    assert "Timeout (0:00:06)!" in out and "test_both_ranks_stuck_in_mpi" in out, out[-3000:]


EXTRAS = """
import pytest


def test_needs_torch():
    pytest.importorskip("torch")
"""


def test_missing_extras_fail_under_make_test_and_skip_by_hand(tmp_path):
    """A `torch` that cannot be imported (shadowed on PYTHONPATH): an error with HPCRNN_REQUIRE_EXTRAS=1, a
    listed skip without it."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "torch.py").write_text("raise ModuleNotFoundError('torch hidden by the test')\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code, out, _ = run_suite(tmp_path, EXTRAS, ranks=0, env={**env, "HPCRNN_REQUIRE_EXTRAS": "1"})
    assert code != 0 and "make test needs the test extras: import torch failed" in out, out
    code, out, _ = run_suite(tmp_path, EXTRAS, ranks=0, env={**env, "HPCRNN_REQUIRE_EXTRAS": "0"})
    assert code == 0 and "SKIPPED" in out and "torch hidden by the test" in out, out
