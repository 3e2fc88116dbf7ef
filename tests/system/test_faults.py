"""Preemption, restart and failure, for real: signals to a running mpiexec job, kill -9 of a rank, an
exception on one rank, a full file system while checkpointing, a truncated checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, mpiexec, run_cli, write_windows

from hpcrnn import checkpoint as ckpt

PREEMPTED_EXIT = 75


def train_args(data, run_dir, *extra):
    return ["train", "--data", data, "--run-dir", run_dir, "--cell", "lstm", "--hidden", 8, "--layers", 2,
            "--batch-size", 8, "--epochs", 200, "--set", "model.dtype=float64", "--set", "train.progress=none",
            "--set", "data.val_fraction=0", "--set", "checkpoint.every_steps=25", "--set", "checkpoint.keep=2",
            *extra]


def start(args, ranks):
    command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "hpcrnn", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def rank_pids(run_dir, launcher):
    """The rank processes of the job writing `run_dir` (the launcher itself excluded)."""
    found = subprocess.run(["pgrep", "-f", "--", f"-m hpcrnn train .*--run-dir {run_dir} "], capture_output=True,
                           text=True).stdout.split()
    return [int(p) for p in found if int(p) != launcher.pid]


def signal_ranks(run_dir, launcher, sig):
    """Signals every rank, as Slurm does (scancel --signal, or the batch shell's forwarding through srun).
    MPICH's mpiexec forwards signals too, but then may report exit 0 instead of the ranks' code."""
    pids = rank_pids(run_dir, launcher)
    assert pids
    for pid in pids:
        os.kill(pid, sig)
    return pids


def wait_for_step(run_dir, step, process, timeout=120):
    path = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(path):
            with open(path) as handle:
                lines = handle.read().splitlines()
            if len(lines) >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def final_params(run_dir):
    arrays, meta = ckpt.load(ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])
    return {k: v for k, v in arrays.items() if k.startswith("params/")}, meta


def steps_logged(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line)["step"] for line in handle if '"event"' not in line]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_windows(str(tmp_path_factory.mktemp("faults") / "d.h5"), n=40)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("clean") / "run")
    result = run_cli(train_args(data, run_dir), ranks=2)
    assert result.returncode == 0, result.stderr
    return final_params(run_dir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_then_resume_is_bitwise_identical(data, uninterrupted, tmp_path, sig):
    run_dir = str(tmp_path / "run")
    job = start(train_args(data, run_dir), ranks=2)
    wait_for_step(run_dir, 30, job)
    assert len(signal_ranks(run_dir, job, sig)) == 2
    out, err = job.communicate(timeout=60)
    assert job.returncode == PREEMPTED_EXIT, out[-3000:] + err[-3000:]
    assert "preempted at step" in out
    stopped_at = final_params(run_dir)[1]["step"]
    assert 30 <= stopped_at < uninterrupted[1]["step"]
    resumed = run_cli(train_args(data, run_dir, "--resume", "auto"), ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    params, meta = final_params(run_dir)
    assert meta["step"] == uninterrupted[1]["step"]
    for key, value in uninterrupted[0].items():
        assert np.array_equal(params[key], value), key       # bitwise
    logged = steps_logged(run_dir)
    assert logged == list(range(1, meta["step"] + 1))         # no step lost or repeated


def test_repeated_signals_keep_exit_75_and_the_record(data, tmp_path):
    """A second and third signal 20-300 ms after the first (Slurm's warning plus a scancel, say) arrive while the
    checkpoint is written or the ranks exit: the exit code and the run's record stay "preempted"."""
    run_dir = str(tmp_path / "run")
    job = start(train_args(data, run_dir), ranks=2)
    wait_for_step(run_dir, 30, job)
    pids = signal_ranks(run_dir, job, signal.SIGTERM)
    for delay in (0.02, 0.1, 0.3):
        time.sleep(delay)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
    out, err = job.communicate(timeout=60)
    assert job.returncode == PREEMPTED_EXIT, out[-3000:] + err[-3000:]
    with open(os.path.join(run_dir, "summary.json")) as handle:
        record = json.load(handle)
    assert record["state"] == "preempted" and record["checkpoint"] == ckpt.list_checkpoints(
        os.path.join(run_dir, "checkpoints"))[0]
    assert ckpt.verifies(record["checkpoint"])


def test_resume_with_different_rank_count(data, uninterrupted, tmp_path):
    run_dir = str(tmp_path / "run")
    job = start(train_args(data, run_dir), ranks=2)
    wait_for_step(run_dir, 40, job)
    signal_ranks(run_dir, job, signal.SIGTERM)
    job.communicate(timeout=60)
    assert job.returncode == PREEMPTED_EXIT
    resumed = run_cli(train_args(data, run_dir, "--resume", "auto"), ranks=3)
    assert resumed.returncode == 0, resumed.stderr
    params, meta = final_params(run_dir)
    assert meta["world_size"] == 3 and meta["step"] == uninterrupted[1]["step"]
    for key, value in uninterrupted[0].items():
        np.testing.assert_allclose(params[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_kill_9_of_one_rank_ends_the_job(data, tmp_path):
    run_dir = str(tmp_path / "run")
    job = start(train_args(data, run_dir), ranks=2)
    wait_for_step(run_dir, 60, job)
    victims = rank_pids(run_dir, job)
    assert len(victims) == 2, victims
    killed_at = time.time()
    os.kill(max(victims), signal.SIGKILL)
    job.communicate(timeout=60)
    assert time.time() - killed_at < 30
    assert job.returncode != 0
    arrays, meta = ckpt.load(ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])
    assert meta["step"] >= 50


INJECT = """
import sys
from mpi4py import MPI
import hpcrnn.model
calls = [0]
original = hpcrnn.model.Model.forward_backward
def failing(self, *args, **kw):
    calls[0] += 1
    if MPI.COMM_WORLD.rank == 1 and calls[0] == 5:
        raise RuntimeError("injected failure")
    return original(self, *args, **kw)
hpcrnn.model.Model.forward_backward = failing
from hpcrnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_exception_on_one_rank_aborts_promptly(data, tmp_path):
    started = time.time()
    args = [mpiexec(), "-n", "3", sys.executable, "-c", INJECT, *map(str, train_args(data, str(tmp_path / "r")))]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0
    assert "error on rank 1: RuntimeError: injected failure" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.time() - started < 60


def test_truncated_newest_checkpoint_falls_back(data, tmp_path):
    run_dir = str(tmp_path / "run")
    short = train_args(data, run_dir, "--set", "train.max_steps=60")
    assert run_cli(short, ranks=2).returncode == 0
    newest, previous = ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[:2]
    with open(newest, "r+b") as handle:
        handle.truncate(os.path.getsize(newest) // 3)
    result = run_cli(train_args(data, run_dir, "--resume", "auto", "--set", "train.max_steps=80"), ranks=2)
    assert result.returncode == 0, result.stderr
    assert "skipping damaged checkpoint" in result.stdout
    assert f"resumed from {previous}" in result.stdout
    assert ckpt.load(ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])[1]["step"] == 80


def mount_tiny_fs(path, size_kib):
    os.makedirs(path)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", path],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here ({result.stderr.strip()}); the simulated ENOSPC unit "
                    "test in tests/unit/test_checkpoint.py still covers the logic")


def test_full_file_system_keeps_previous_checkpoint_and_fails_the_run(data, tmp_path):
    run_dir = str(tmp_path / "run")
    checkpoints = os.path.join(run_dir, "checkpoints")
    mount_tiny_fs(checkpoints, 160)
    try:
        result = run_cli(train_args(data, run_dir, "--set", "train.max_steps=300", "--set", "checkpoint.keep=50"),
                         ranks=2)
        assert result.returncode == 2, result.stdout + result.stderr     # 3 failed checkpoints in a row
        assert "3 checkpoints in a row could not be written" in result.stderr and "No space left" in result.stderr
        assert "not written" in result.stdout and "1 of 3 failures allowed" in result.stdout
        with open(os.path.join(run_dir, "summary.json")) as handle:
            assert json.load(handle)["state"] == "failed"
        survivors = ckpt.list_checkpoints(checkpoints)
        assert len(survivors) >= 2
        for path in survivors:
            ckpt.load(path)                                      # every file left is whole and verified
        assert not [p for p in os.listdir(checkpoints) if ".tmp-" in p]
        resumed = run_cli(train_args(data, run_dir, "--resume", "auto", "--set", "train.max_steps=310"), ranks=2)
        assert f"resumed from {survivors[0]}" in resumed.stdout
    finally:
        subprocess.run(["umount", "-l", checkpoints])
