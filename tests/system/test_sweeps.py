"""`hpcrnn sweep run|status|collect` end to end on this machine: a local sweep of tiny trials with ASHA rungs
(early stops that follow the rule, results table, plot, best.toml that trains), a rerun that skips finished
trials, a USR1-interrupted 2-rank sweep that resumes its unfinished trials, and one-line errors for bad specs."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, run_cli, write_windows
from hpcrnn.tuning import asha

SPEC = """
[data]
path = "{data}"
val_fraction = 0.25
[model]
cell = "lstm"
[train]
epochs = {epochs}
batch_size = 32
progress = "none"

[grid]
"optim.lr" = {lrs}
"model.hidden_size" = {hidden}

[sweep]
seed = 3
rungs = [1, 3]
reduction_factor = 2
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_windows(str(tmp_path_factory.mktemp("sweep-data") / "w.h5"), n=320, seq_len=16, features=3,
                         outputs=1)


def write_spec(path, dataset, epochs=6, lrs="[0.03, 0.01, 1e-5]", hidden="[4, 8]"):
    path.write_text(SPEC.format(data=dataset, epochs=epochs, lrs=lrs, hidden=hidden))
    return path


def records(out):
    sweep = json.loads((out / "trials.json").read_text())
    return sweep, [json.loads((out / t["name"] / "sweep.json").read_text()) for t in sweep["trials"]]


def step_lines(run_dir):
    with open(run_dir / "metrics.jsonl") as handle:
        return [json.loads(line)["step"] for line in handle if '"event"' not in line]


def steps_per_epoch(run_dir):
    """The trainer's own count from its start line in train.log ("... 8 steps/epoch")."""
    return int(re.search(r"(\d+) steps/epoch", (run_dir / "train.log").read_text()).group(1))


def one_line_error(result, fragment):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpcrnn: error: ") and fragment in lines[0], result.stderr


def check_trials(out, sweep, trial_records, epochs):
    """Every trial met the first rung; each decision follows the rule from the values it saw; stopped trials
    trained less than the others, which trained to the end; an lr=1e-5 trial that saw a better lr was stopped."""
    epoch_steps = steps_per_epoch(out / "trial-0000")
    states = [r["state"] for r in trial_records]
    for trial, record in zip(sweep["trials"], trial_records):
        steps = len(step_lines(out / trial["name"]))
        assert [d["rung"] for d in record["decisions"]][:1] == [1], record   # every trial met the first rung
        for decision in record["decisions"]:              # each decision follows the rule from what it saw
            seen = list(decision["seen"].values())
            assert asha.decide(decision["value"], seen, 2.0, False)[0] == (decision["decision"] == "promote")
        if record["state"] == "stopped":
            assert record["decisions"][-1]["decision"] == "stop" and steps < epochs * epoch_steps, (steps, record)
        elif record.get("reason") == "finished before the stop arrived":   # a tiny trial can outrun its stop
            assert record["decisions"][-1]["decision"] == "stop" and steps == epochs * epoch_steps, record
        else:
            assert all(d["decision"] == "promote" for d in record["decisions"]) and steps == epochs * epoch_steps
        lrs_seen = {sweep["trials"][int(i)]["params"]["optim.lr"] for i in record["decisions"][0]["seen"]}
        if trial["params"]["optim.lr"] == 1e-5 and lrs_seen - {1e-5}:   # far behind a better lr at the rung
            assert record["decisions"][0]["decision"] == "stop" and len(record["decisions"]) == 1, record
    orders = [t["params"]["optim.lr"] for t in sweep["trials"]]
    assert orders.index(1e-5) >= 2, "seed 3 runs the lr=1e-5 trials after others (the sweep shuffles the grid)"
    assert states.count("stopped") >= 2, states


@pytest.mark.slow
def test_local_sweep_stops_bad_trials_collects_results_and_skips_finished_ones(tmp_path, dataset):
    spec, out = write_spec(tmp_path / "sweep.toml", dataset), tmp_path / "out"
    started = time.monotonic()
    result = run_cli(["sweep", "run", "--spec", spec, "--out", out, "--parallel", 2], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"6-trial local sweep: {time.monotonic() - started:.1f} s")
    sweep, trial_records = records(out)
    states = [r["state"] for r in trial_records]
    assert len(states) == 6 and set(states) <= {"done", "stopped"} and "done" in states, states
    check_trials(out, sweep, trial_records, epochs=6)
    for trial in sweep["trials"]:          # 2 trials at once on 2 cores: each bound to a core of its own
        command = (out / trial["name"] / "train.log").read_text().splitlines()[0]
        assert command.split()[1:4] in (["taskset", "-c", "0"], ["taskset", "-c", "1"]), command
        core = int(command.split()[3])
        affinity = json.loads((out / trial["name"] / "summary.json").read_text())["per_rank"][0]["affinity"]
        assert affinity == [core], (command, affinity)
    status = run_cli(["sweep", "status", out])
    assert status.returncode == 0, status.stderr
    assert f"6 trials: 0 pending, 0 running, {states.count('done')} done, {states.count('stopped')} stopped, " \
           "0 failed" in status.stdout

    collected = run_cli(["sweep", "collect", out])
    assert collected.returncode == 0, collected.stderr
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    values = [float(r["val_loss"]) for r in rows]
    assert values == sorted(values) and set(rows[0]) >= {"optim.lr", "model.hidden_size", "step", "wall_s", "state"}
    winner = next(r for r in rows if r["state"] == "done")
    assert "| 1 | trial-" in (out / "results.md").read_text() and (out / "results.png").stat().st_size > 5000
    best = (out / "best.toml").read_text()
    assert f"lr = {float(winner['optim.lr'])!r}" in best and f"hidden_size = {winner['model.hidden_size']}\n" in best
    trained = run_cli(["train", "--config", out / "best.toml", "--epochs", 1])
    assert trained.returncode == 0 and (out / "best" / "summary.json").exists(), trained.stderr

    before = {t["name"]: (out / t["name"] / "metrics.jsonl").read_bytes() for t in sweep["trials"]}
    again = run_cli(["sweep", "run", "--spec", spec, "--out", out, "--parallel", 2])
    assert again.returncode == 0 and "6 trial(s) finished before: skipped" in again.stdout, again.stderr
    assert before == {t["name"]: (out / t["name"] / "metrics.jsonl").read_bytes() for t in sweep["trials"]}
    changed = write_spec(tmp_path / "other.toml", dataset, lrs="[0.02]")
    one_line_error(run_cli(["sweep", "run", "--spec", changed, "--out", out]), "holds another sweep")


@pytest.mark.slow
def test_interrupted_two_rank_sweep_resumes_unfinished_trials(tmp_path, dataset):
    spec = write_spec(tmp_path / "sweep.toml", dataset, epochs=30, lrs="[0.03, 1e-5]", hidden="[8]")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hpcrnn", "sweep", "run", "--spec", str(spec), "--out", str(out),
               "--ranks", "2", "--parallel", "1"]
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "trial-0000"
    deadline = time.monotonic() + 120
    while not ((first / "metrics.jsonl").exists() and len(step_lines(first)) >= 5):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
        time.sleep(0.05)
    sweep.send_signal(signal.SIGUSR1)
    try:
        output = sweep.communicate(timeout=120)[0]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 75 and "run the same command again to resume" in output, output
    status = run_cli(["sweep", "status", out])
    assert "2 trials: 2 pending" in status.stdout, status.stdout
    interrupted = json.loads((first / "sweep.json").read_text())
    assert interrupted["state"] == "preempted" and interrupted["starts"] == 1, interrupted

    result = run_cli(["sweep", "run", "--spec", spec, "--out", out, "--ranks", 2, "--parallel", 1], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    _, (record, second) = records(out)
    assert record["state"] == "done" and record["starts"] == 2, record
    total = 30 * steps_per_epoch(first)
    assert step_lines(first) == list(range(1, total + 1)), "metrics continue from the checkpoint, no gaps"
    summary = json.loads((first / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["resumed_from"] and summary["steps"] == total
    assert "-bind-to user:0,1 -n 2" in (first / "train.log").read_text()     # the trial's ranks bound, one core each
    assert sorted(r["affinity"] for r in summary["per_rank"]) == [[0], [1]]
    assert second["state"] == "stopped" and list(second["decisions"][0]["seen"]) == ["0"], second
    assert record["train_s"] > 0 and record["wall_s"] > record["train_s"]


BAD_SPECS = {
    "unknown key": ('[grid]\n"model.hiden_size" = [4]\n', "unknown config key 'model.hiden_size'"),
    "empty grid": ('[grid]\n"optim.lr" = []\n', "[grid] 'optim.lr': empty list"),
    "bad distribution": ('[random]\n"optim.lr" = {loguniform = [0.0, 0.1]}\n', "loguniform needs 0 < low"),
    "trials < 1": ('[grid]\n"optim.lr" = [0.1]\n[sweep]\ntrials = 0\n', "trials: expected an integer >= 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_SPECS))
def test_bad_specs_are_one_line_errors(tmp_path, dataset, name):
    text, fragment = BAD_SPECS[name]
    spec = tmp_path / "bad.toml"
    spec.write_text(f'[data]\npath = "{dataset}"\n' + text)
    result = run_cli(["sweep", "run", "--spec", spec, "--out", tmp_path / "out"])
    one_line_error(result, fragment)
    assert f"{spec}: " in result.stderr and not os.path.exists(tmp_path / "out" / "trials.json")


def test_status_of_a_folder_that_is_no_sweep(tmp_path):
    one_line_error(run_cli(["sweep", "status", tmp_path]), "not a sweep folder")
    one_line_error(run_cli(["sweep", "run", "--spec", tmp_path / "none.toml", "--out", tmp_path]),
                   "sweep spec not found")
