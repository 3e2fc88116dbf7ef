"""The job scripts in jobs/ against a real single-node Slurm (tests/system/slurm_cluster.py): rendered scripts
pass `sbatch --test-only`, a 2-rank training job completes, a USR1-preempted job checkpoints, exits 75, is
requeued and resumes to the end, a scaling sweep runs as job steps, and a hyperparameter sweep runs as a job array
with one task preempted, requeued and finished. Skipped where Slurm cannot run."""
import json
import os
import re
import subprocess
import time

import pytest

from helpers import ROOT, run_cli, write_windows
from slurm_cluster import PARTITION, SlurmCluster, unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
VENV = os.path.join(ROOT, ".venv")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        print(f"skipping the Slurm tests: {reason}")
        pytest.skip(reason)
    started = SlurmCluster().start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return write_windows(str(tmp_path_factory.mktemp("slurm-data") / "windows.h5"), n=256, seq_len=40, features=4)


def render(output, template, *flags, env=None):
    result = run_cli(["jobs", "render", template, "--partition", PARTITION, "--output", output, *flags], env=env)
    assert result.returncode == 0, result.stderr
    return str(output)


def render_train(tmp_path, run_dir, dataset, train_args):
    return render(tmp_path / "train.job", "train", "--nodes", 1, "--ntasks-per-node", 2, "--time", "00:10:00",
                  "--set", f"run_dir={run_dir}", "--set", f"data={dataset}", "--set", f"venv={VENV}",
                  "--set", f"log={tmp_path}/job-%j.out", "--set", f"train_args={train_args}")


def steps_of(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line)["step"] for line in handle if line.strip() and '"event"' not in line]


def steps_per_epoch(log):
    """The trainer's own count from its start line ("... 8 steps/epoch"), so the test does not redo the split."""
    return int(re.search(r"(\d+) steps/epoch", log).group(1))


def read(path):
    with open(path) as handle:
        return handle.read()


def test_rendered_templates_pass_sbatch_test_only(cluster, tmp_path):
    scripts = [render(tmp_path / "train.job", "train", "--set", "run_dir=runs/x"),
               render(tmp_path / "strong.job", "strong_scaling", "--ntasks-per-node", 2,
                      "--set", f"out={tmp_path}/s", "--set", "ranks=1,2"),
               render(tmp_path / "weak.job", "weak_scaling", "--ntasks-per-node", 2, "--cpus-per-task", 1,
                      "--set", f"out={tmp_path}/w", "--set", "ranks=1,2"),
               render(tmp_path / "array.job", "sweep_array", "--ntasks-per-node", 2,
                      "--set", f"out={tmp_path}/a", "--set", "array=0-3%2")]
    for script in scripts:
        result = subprocess.run(["sbatch", "--test-only", script], env=cluster.env, capture_output=True, text=True)
        assert result.returncode == 0 and "to start at" in result.stderr, (script, result.stderr)
    too_big = render(tmp_path / "big.job", "train", "--ntasks-per-node", 64, "--set", "run_dir=runs/x")
    refused = subprocess.run(["sbatch", "--test-only", too_big], env=cluster.env, capture_output=True, text=True)
    assert refused.returncode != 0, "more tasks than the node has must be refused (the check is real)"


def test_train_job_runs_two_ranks_to_completion(cluster, tmp_path, dataset):
    run_dir = tmp_path / "run"
    script = render_train(tmp_path, run_dir, dataset, "--cell lstm --hidden 8 --epochs 2 --batch-size 32")
    started = time.monotonic()
    job_id = cluster.sbatch(script, tmp_path)
    job = cluster.wait_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"), timeout=120)
    log = read(tmp_path / f"job-{job_id}.out")
    assert job["JobState"] == "COMPLETED", log
    print(f"2-rank training job: {time.monotonic() - started:.1f} s from submission to completion")
    summary = json.loads(read(run_dir / "summary.json"))
    assert summary["ranks"] == 2
    assert summary["steps"] == len(steps_of(run_dir)) == 2 * steps_per_epoch(log)
    assert os.listdir(run_dir / "checkpoints"), "epoch-end checkpoints expected"
    assert "training step ended with exit code 0" in log and "restart 0" in log


def test_usr1_preemption_checkpoints_requeues_and_resumes(cluster, tmp_path, dataset):
    run_dir = tmp_path / "run"
    train_args = ("--cell lstm --hidden 48 --epochs 120 --batch-size 16 --set checkpoint.every_steps=500 "
                  "--set checkpoint.every_epochs=0 --set train.progress=none")
    script = render_train(tmp_path, run_dir, dataset, train_args)
    started = time.monotonic()
    job_id = cluster.sbatch(script, tmp_path)
    cluster.wait_for(lambda: len(steps_of(run_dir)) >= 20, 120, "the training step did not start")
    cluster.run("scancel", "--signal=USR1", "--batch", job_id)
    requeued = cluster.wait_job(job_id, ("PENDING", "FAILED", "COMPLETED", "CANCELLED"), timeout=90)
    assert requeued["JobState"] == "PENDING" and requeued["Restarts"] == "1", requeued
    cluster.start_requeued(job_id)
    job = cluster.wait_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=150)
    log = read(tmp_path / f"job-{job_id}.out")
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", log
    print(f"preempted + requeued training job: {time.monotonic() - started:.1f} s from submission to completion")
    assert "received USR1" in log and "exit code 75" in log and "requeueing" in log and "restart 1" in log, log
    steps = steps_of(run_dir)
    total = 120 * steps_per_epoch(log)
    assert steps == list(range(1, total + 1)), "metrics must continue from the checkpoint step without gaps"
    summary = json.loads(read(run_dir / "summary.json"))
    preempted_at = int(summary["resumed_from"].rsplit("step-", 1)[1].split(".")[0])
    assert 20 <= preempted_at < total
    assert summary["ranks"] == 2 and summary["steps"] == total


def test_scaling_sweep_runs_as_job_steps(cluster, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli(["scaling", "run", "--mode", "strong", "--ranks", "1,2", "--out", out, "--launcher", "slurm",
                      "--steps", 8, "--warmup", 2, "--batch-size", 16, "--hidden", 8, "--length", 10,
                      "--features", 2, "--job-set", f"partition={PARTITION}", "--job-set", f"venv={VENV}",
                      "--job-set", "time=00:05:00"], env=cluster.env)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split("submitted job ")[1].split()[0]
    job = cluster.wait_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=150)
    assert job["JobState"] == "COMPLETED", read(out / f"slurm-{job_id}.out")
    for ranks in (1, 2):
        record = json.loads(read(out / f"strong-p{ranks:04d}" / "result.json"))
        assert record["ranks"] == record["summary_ranks"] == ranks
        assert record["global_batch"] == 16 and record["launcher"][0] == "srun"
    assert json.loads(read(out / "allreduce.json"))["ranks_used"] == [2]


SWEEP_SPEC = """
[data]
path = "{data}"
val_fraction = 0.25
[model]
cell = "lstm"
hidden_size = 8
[train]
epochs = 60
batch_size = 16
progress = "none"
[grid]
"optim.lr" = [0.01, 1e-5, 3e-6]
[sweep]
seed = 3
rungs = [1]
reduction_factor = 2
"""


def test_sweep_job_array_with_a_preempted_task(cluster, tmp_path, dataset):
    """Three 2-rank trials as a job array, one at a time (%1): trial 0 (lr 0.01 with seed 3) passes its rung (first
    there), is sent USR1, checkpoints, is requeued and finishes; trials 1 and 2 (lr 1e-5, 3e-6) meet its value at
    the rung and are stopped early."""
    spec, out = tmp_path / "sweep.toml", tmp_path / "sweep"
    spec.write_text(SWEEP_SPEC.format(data=dataset))
    started = time.monotonic()
    result = run_cli(["sweep", "run", "--spec", spec, "--out", out, "--launcher", "slurm", "--ranks", 2,
                      "--parallel", 1, "--job-set", f"partition={PARTITION}", "--job-set", f"venv={VENV}",
                      "--job-set", "time=00:10:00"], env=cluster.env)
    assert result.returncode == 0, result.stdout + result.stderr
    array = result.stdout.split("submitted job array ")[1].split(":")[0]
    first = out / "trial-0000"

    def promoted():
        record = json.loads(read(first / "sweep.json")) if (first / "sweep.json").exists() else {}
        return [d["decision"] for d in record.get("decisions", [])] == ["promote"]
    cluster.wait_for(promoted, 120, "trial 0 did not reach its rung")
    # Slurm 22.05 signals an array task's batch shell at once but answers "Job can not be altered now, try again
    # later", and scancel retries for ~20 s, signalling the requeued start again: one attempt only.
    try:
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{array}_0"], env=cluster.env, timeout=3)
    except subprocess.TimeoutExpired:
        pass
    requeued = cluster.wait_job(f"{array}_0", ("PENDING", "FAILED", "COMPLETED", "CANCELLED"), timeout=90)
    assert requeued["JobState"] == "PENDING" and requeued["Restarts"] == "1", requeued
    cluster.start_requeued(f"{array}_0")
    cluster.wait_for(lambda: not cluster.run("squeue", "-h", "-j", array, check=False).strip(), 300,
                     "the job array did not end")
    print(f"3-trial sweep job array with a preempted task: {time.monotonic() - started:.1f} s")
    logs = {i: read(out / f"slurm-{array}_{i}.out") for i in range(3)}
    for index in range(3):
        assert cluster.job(f"{array}_{index}")["JobState"] == "COMPLETED", logs[index]
    assert cluster.job(f"{array}_0")["Restarts"] == "1"
    assert "received USR1" in logs[0] and "exit code 75" in logs[0] and "requeueing" in logs[0], logs[0]
    assert "restart 1" in logs[0]
    records = [json.loads(read(out / f"trial-{i:04d}" / "sweep.json")) for i in range(3)]
    assert [r["state"] for r in records] == ["done", "stopped", "stopped"], records
    assert records[0]["starts"] == 2 and records[1]["decisions"][0]["seen"] == {"0": records[0]["rungs"]["1"]}
    total = 60 * steps_per_epoch(read(first / "train.log"))
    assert steps_of(first) == list(range(1, total + 1)), "the requeued trial continued from its checkpoint"
    summary = json.loads(read(first / "summary.json"))
    assert summary["ranks"] == 2 and summary["resumed_from"] and summary["state"] == "done"
    status = run_cli(["sweep", "status", out])
    assert "3 trials: 0 pending, 0 running, 1 done, 2 stopped, 0 failed" in status.stdout, status.stdout
    collected = run_cli(["sweep", "collect", out])
    assert collected.returncode == 0 and "best: trial-0000" in collected.stdout, collected.stdout + collected.stderr
