"""Issue 13: a run never loses or damages the user's data: predict's output guard, checkpoint pruning among
junk files, the final state always saved, inference batch sizes, one run per directory, failed checkpoints,
metrics.jsonl kept whole across crashes, config.toml of a refused resume, signals at awkward moments."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, run_cli, write_windows

from hpcrnn import checkpoint as ckpt


def one_line_error(result, *fragments, code=2):
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("hpcrnn")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def small_run(data, run_dir, *extra):
    return ["train", "--data", data, "--run-dir", run_dir, "--cell", "rnn", "--hidden", 4, "--batch-size", 8,
            "--set", "train.progress=none", "--set", "data.val_fraction=0", *extra]


def checkpoint_steps(run_dir):
    return [int(os.path.basename(p)[5:14]) for p in ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))]


def step_records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [r["step"] for r in map(json.loads, handle) if "event" not in r]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run on 40 samples (5 steps an epoch), 2 epochs, and its data."""
    folder = tmp_path_factory.mktemp("safety")
    data = write_windows(str(folder / "d.h5"), n=40)
    run_dir = str(folder / "run")
    result = run_cli(small_run(data, run_dir, "--epochs", 2))
    assert result.returncode == 0, result.stderr
    return data, run_dir


# ---- 1. predict --out never destroys the input or the checkpoint ---------------------------------------------
@pytest.mark.parametrize("ranks", [0, 2])
def test_predict_refuses_links_to_the_data_and_the_checkpoint(trained, tmp_path, ranks):
    data, run_dir = trained
    before = open(data, "rb").read()
    os.symlink(os.path.dirname(data), tmp_path / "linkdir")
    os.link(data, tmp_path / "hard.h5")
    checkpoint = ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[0]
    checkpoint_bytes = open(checkpoint, "rb").read()
    for out in (tmp_path / "linkdir" / os.path.basename(data), tmp_path / "hard.h5"):
        result = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", out], ranks=ranks)
        one_line_error(result, "same file as the input data")
    result = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", checkpoint], ranks=ranks)
    one_line_error(result, "same file as the checkpoint")
    older = ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[1]
    result = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", older], ranks=ranks)
    one_line_error(result, "would overwrite an hpcrnn checkpoint")
    assert open(data, "rb").read() == before
    assert open(checkpoint, "rb").read() == checkpoint_bytes


def test_predict_failure_keeps_the_previous_output(trained, tmp_path, monkeypatch):
    from hpcrnn.comm import self_comm
    from hpcrnn.model import Model
    from hpcrnn.predict import run_predict
    data, run_dir = trained
    out = str(tmp_path / "pred.h5")
    assert run_predict(run_dir, data, out, self_comm(), batch_size=8) == 40
    good = open(out, "rb").read()
    calls = []

    def failing(self, x, lengths=None):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk went away")
        return np.zeros((len(x), self.output_size), np.float32)
    monkeypatch.setattr(Model, "predict", failing)
    with pytest.raises(OSError):
        run_predict(run_dir, data, out, self_comm(), batch_size=8)
    assert open(out, "rb").read() == good
    assert sorted(os.listdir(tmp_path)) == ["pred.h5"]


# ---- 2. pruning never deletes valid checkpoints for junk ------------------------------------------------------
def test_pruning_among_junk_keeps_valid_checkpoints(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"), n=40)
    run_dir = str(tmp_path / "run")
    assert run_cli(small_run(data, run_dir, "--epochs", 1)).returncode == 0
    folder = os.path.join(run_dir, "checkpoints")
    open(os.path.join(folder, "step-000000099.h5"), "w").write("not a checkpoint")
    open(os.path.join(folder, "step-000000098.h5"), "w").close()
    os.mkdir(os.path.join(folder, "step-000000097.h5"))
    result = run_cli(small_run(data, run_dir, "--epochs", 4, "--resume", "auto", "--set", "checkpoint.keep=2"))
    assert result.returncode == 0, result.stderr
    valid = [p for p in ckpt.list_checkpoints(folder) if ckpt.verifies(p)]
    assert [int(os.path.basename(p)[5:14]) for p in valid] == [20, 15]
    assert all(os.path.exists(os.path.join(folder, f"step-0000000{n}.h5")) for n in (97, 98, 99))
    assert summary(run_dir)["checkpoint"] == os.path.join(folder, "step-000000020.h5")
    again = run_cli(small_run(data, run_dir, "--epochs", 5, "--resume", "auto"))
    assert again.returncode == 0, again.stderr
    assert summary(run_dir)["resumed_from"] == os.path.join(folder, "step-000000020.h5")
    assert summary(run_dir)["steps"] == 25


# ---- 3. the final state is always checkpointed --------------------------------------------------------------
def test_final_state_is_checkpointed_off_schedule(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"), n=80)
    run_dir = str(tmp_path / "steps")
    assert run_cli(small_run(data, run_dir, "--epochs", 3, "--max-steps", 13)).returncode == 0
    assert checkpoint_steps(run_dir)[0] == 13 and summary(run_dir)["steps"] == 13
    run_dir = str(tmp_path / "epochs")
    result = run_cli(small_run(data, run_dir, "--epochs", 3, "--set", "checkpoint.every_epochs=2"))
    assert result.returncode == 0, result.stderr
    assert checkpoint_steps(run_dir) == [30, 20]
    evaluated = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data])
    assert "step-000000030.h5" in evaluated.stdout, evaluated.stdout + evaluated.stderr


# ---- 4. inference batch sizes are validated -----------------------------------------------------------------
@pytest.mark.parametrize("size", [-1, 0])
def test_inference_batch_size_must_be_positive(trained, tmp_path, size):
    data, run_dir = trained
    out = tmp_path / "p.h5"
    one_line_error(run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", out,
                            "--batch-size", size]), "--batch-size", "must be an integer >= 1")
    assert not out.exists()
    one_line_error(run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--batch-size", size]),
                   "--batch-size")


# ---- 6. one run per run directory ---------------------------------------------------------------------------
def test_second_run_on_a_locked_directory_is_refused(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"), n=400)
    run_dir = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "hpcrnn", *map(str, small_run(data, run_dir, "--epochs", 400))],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and time.time() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        for resume in ("auto", "never"):
            second = run_cli(small_run(data, run_dir, "--epochs", 1, "--resume", resume))
            one_line_error(second, "is in use by a running job", f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    again = run_cli(small_run(data, run_dir, "--epochs", 1, "--resume", "auto"))   # the kernel dropped the lock
    assert again.returncode == 0, again.stderr


def test_run_dir_lock_names_the_holder(tmp_path):
    from hpcrnn.rundir import RunDir
    first, second = RunDir(str(tmp_path), writes=True), RunDir(str(tmp_path), writes=True)
    assert first.lock() is None
    message = second.lock()
    assert "in use" in message and f"pid {os.getpid()}" in message
    first.unlock()
    assert second.lock() is None
    second.unlock()


# ---- 7. checkpoints that cannot be written fail the run -----------------------------------------------------
def failing_save(monkeypatch, fail_from_call):
    calls = []
    real = ckpt.save

    def save(path, arrays, meta):
        calls.append(path)
        if len(calls) >= fail_from_call:
            raise OSError(28, "No space left on device")
        real(path, arrays, meta)
    monkeypatch.setattr(ckpt, "save", save)
    return calls


def train_in_process(data, run_dir, *sets):
    from hpcrnn.comm import self_comm
    from hpcrnn.config import load_config
    from hpcrnn.run import train
    config = load_config(None, [f"data.path={data}", f"run_dir={run_dir}", "model.cell=rnn", "model.hidden_size=4",
                                "train.batch_size=8", "train.progress=none", "data.val_fraction=0", *sets])
    return train(config, self_comm())


def test_unwritable_final_checkpoint_fails_the_run(trained, tmp_path, monkeypatch):
    data, _ = trained
    run_dir = str(tmp_path / "run")
    failing_save(monkeypatch, fail_from_call=1)
    with pytest.raises(ckpt.CheckpointError, match="final checkpoint could not be written.*no checkpoint of this"):
        train_in_process(data, run_dir, "train.epochs=1")
    assert summary(run_dir)["state"] == "failed" and summary(run_dir)["checkpoint"] is None


def test_consecutive_checkpoint_failures_stop_the_run(trained, tmp_path, monkeypatch, capsys):
    data, _ = trained
    run_dir = str(tmp_path / "run")
    calls = failing_save(monkeypatch, fail_from_call=2)
    with pytest.raises(ckpt.CheckpointError, match="3 checkpoints in a row.*the newest is .*step-000000001.h5"):
        train_in_process(data, run_dir, "train.epochs=10", "checkpoint.every_steps=1")
    assert len(calls) == 4 and summary(run_dir)["steps"] == 4
    assert "1 of 3 failures allowed" in capsys.readouterr().out


# ---- 8. metrics.jsonl stays valid JSON lines, each step once ------------------------------------------------
def test_resume_trims_metrics_to_the_checkpoint(trained, tmp_path):
    data, _ = trained
    run_dir = str(tmp_path / "run")
    assert run_cli(small_run(data, run_dir, "--epochs", 2)).returncode == 0
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as handle:   # a crash after step 10's checkpoint
        for step in (11, 12, 13):
            handle.write(json.dumps({"step": step, "epoch": 2, "loss": 1.0}) + "\n")
        handle.write('{"step": 14, "epo')
    result = run_cli(small_run(data, run_dir, "--epochs", 3, "--resume", "auto"))
    assert result.returncode == 0, result.stderr
    assert step_records(run_dir) == list(range(1, 16))


def test_trim_metrics_keeps_whole_lines_up_to_the_step(tmp_path):
    from hpcrnn.rundir import RunDir
    run_dir = RunDir(str(tmp_path), writes=True)
    lines = [{"step": 1}, {"event": "eval", "step": 1}, {"step": 2}, {"step": 3}]
    with open(run_dir.metrics, "w") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4')
    run_dir.trim_metrics(2)
    assert [json.loads(line) for line in open(run_dir.metrics)] == lines[:3]


# ---- 9. a refused resume leaves config.toml alone -----------------------------------------------------------
def test_refused_resume_keeps_config_toml(trained, tmp_path):
    data, _ = trained
    run_dir = str(tmp_path / "run")
    assert run_cli(small_run(data, run_dir, "--epochs", 1)).returncode == 0
    before = open(os.path.join(run_dir, "config.toml")).read()
    refused = run_cli(small_run(data, run_dir, "--epochs", 2, "--resume", "auto", "--hidden", 6))
    one_line_error(refused, "does not match the config")
    assert open(os.path.join(run_dir, "config.toml")).read() == before


# ---- 10. signals at awkward moments still give 75 and a record ----------------------------------------------
@pytest.mark.parametrize("first_after", [0.3, 2.5])
def test_early_and_repeated_signals_exit_75_with_a_checkpoint(trained, tmp_path, first_after):
    data, _ = trained
    run_dir = str(tmp_path / "run")
    job = subprocess.Popen([sys.executable, "-m", "hpcrnn", *map(str, small_run(data, run_dir, "--epochs", 2000))],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(first_after)
    job.send_signal(signal.SIGTERM)
    for _ in range(5):                 # more signals while the checkpoint is written and the process exits
        time.sleep(0.05)
        if job.poll() is None:
            job.send_signal(signal.SIGUSR1)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 75, out + err
    record = summary(run_dir)
    assert record["state"] == "preempted"
    assert ckpt.verifies(record["checkpoint"]) and checkpoint_steps(run_dir)[0] == record["steps"]


def test_summary_records_done(trained):
    assert summary(trained[1])["state"] == "done"


def test_checkpoint_from_before_dropout_and_bidirectional_resumes(trained, tmp_path):
    """A checkpoint whose model meta lacks the keys added later (dropout, bidirectional) still resumes."""
    data, _ = trained
    run_dir = str(tmp_path / "run")
    assert run_cli(small_run(data, run_dir, "--epochs", 1)).returncode == 0
    newest = ckpt.list_checkpoints(os.path.join(run_dir, "checkpoints"))[0]
    arrays, meta = ckpt.load(newest)
    for key in ("dropout", "bidirectional"):
        meta["model"].pop(key)
    ckpt.save(newest, arrays, meta)
    result = run_cli(small_run(data, run_dir, "--epochs", 2, "--resume", "auto"))
    assert result.returncode == 0, result.stderr
    assert summary(run_dir)["resumed_from"] == newest and summary(run_dir)["steps"] == 10
