"""ASHA rung decisions (hpcrnn/tuning/asha.py) from trial records, the metrics follower, a trial's outcome from
its exit code and run record, array index ranges, results ranking, and the job-array script under a stub srun."""
import json
import math
import os
import signal

import pytest

from hpcrnn.checkpoint import PREEMPTED_EXIT
from hpcrnn.scaling.render import render_file
from hpcrnn.tuning import asha
from hpcrnn.tuning.collect import ranked
from hpcrnn.tuning.record import MetricsTail, best_eval, read_record, trial_dir, write_record
from hpcrnn.tuning.runner import array_indices
from hpcrnn.tuning.task import Settings, TrialTask
from test_scaling_render import created_files, run_under_stub

NAN = float("nan")


@pytest.mark.parametrize("seen, factor, keep", [(1, 3, 1), (2, 3, 1), (3, 3, 1), (5, 3, 1), (6, 3, 2), (9, 3, 3),
                                                (2, 2, 1), (3, 2, 1), (4, 2, 2), (7, 2, 3), (10, 2.5, 4)])
def test_keep_count_is_the_top_fraction_and_at_least_one(seen, factor, keep):
    assert asha.keep_count(seen, factor) == keep


@pytest.mark.parametrize("value, others, factor, maximize, expected", [
    (0.5, [], 3, False, (True, 1, 1)),                 # the first at a rung always goes on
    (0.5, [0.4], 2, False, (False, 2, 1)),
    (0.3, [0.4], 2, False, (True, 1, 1)),
    (0.4, [0.4], 2, False, (True, 1, 1)),              # a tie counts in its favour
    (0.35, [0.1, 0.2, 0.3, 0.4, 0.5], 3, False, (False, 4, 2)),
    (0.25, [0.1, 0.2, 0.3, 0.4, 0.5], 3, False, (False, 3, 2)),
    (0.15, [0.1, 0.2, 0.3, 0.4, 0.5], 3, False, (True, 2, 2)),
    (0.9, [0.8, 0.7, 0.95], 2, True, (True, 2, 2)),    # accuracy: larger is better
    (0.75, [0.8, 0.7, 0.95], 2, True, (False, 3, 2)),
    (NAN, [], 2, False, (False, 1, 1)),                # a diverged trial never goes on
    (0.9, [NAN, NAN], 3, False, (True, 1, 1)),         # diverged ones rank below it
])
def test_decide(value, others, factor, maximize, expected):
    assert asha.decide(value, others, factor, maximize) == expected


def test_rung_decision_reads_the_other_trials_records(tmp_path):
    out = str(tmp_path)
    for index, rungs in enumerate([{"1": 0.2, "3": 0.1}, {"1": 0.5}, {}, {"1": NAN}]):
        write_record(trial_dir(out, index), {"rungs": rungs})
    assert asha.seen_at_rung(out, 4, 1, 5) == {0: 0.2, 1: 0.5, 3: pytest.approx(NAN, nan_ok=True)}
    decision = asha.rung_decision(out, 4, 5, 1, 0.3, 40, ("val_loss", 2.0, False))
    assert (decision["decision"], decision["rank"], decision["keep"], decision["step"]) == ("promote", 2, 2, 40)
    assert "val_loss 0.3 ranked 2 of 4 seen there, top 2 go on (reduction factor 2)" in decision["reason"]
    assert decision["seen"]["0"] == 0.2 and sorted(decision["seen"]) == ["0", "1", "3"]
    worse = asha.rung_decision(out, 4, 5, 1, 0.6, 40, ("val_loss", 2.0, False))
    assert (worse["decision"], worse["rank"]) == ("stop", 3)
    third = asha.rung_decision(out, 4, 5, 3, 0.05, 120, ("val_loss", 2.0, False))
    assert third["decision"] == "promote" and third["seen"] == {"0": 0.1}


def test_metrics_tail_reads_complete_lines_and_restarts_on_a_new_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(str(path))
    assert tail.new_records() == []
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert tail.new_records() == [{"step": 1}, {"step": 2}]
    with open(path, "a") as handle:
        handle.write('ep": 3}\n')
    assert tail.new_records() == [{"step": 3}]
    assert tail.new_records() == []
    replaced = tmp_path / "new"
    replaced.write_text('{"step": 1}\n')
    os.replace(replaced, path)                  # a resume trims metrics.jsonl with a rename
    assert tail.new_records() == [{"step": 1}]


def test_best_eval_skips_missing_and_non_finite_values():
    evals = [{"step": 10, "epoch": 1, "loss": 0.5}, {"step": 20, "epoch": 2, "loss": NAN},
             {"step": 30, "epoch": 3, "loss": 0.2}, {"step": 40, "epoch": 4}]
    assert best_eval(evals, "loss", False) == (0.2, 30, 3)
    assert best_eval(evals, "loss", True) == (0.5, 10, 1)
    assert best_eval(evals[3:], "loss", False) is None


def make_task(tmp_path, **flags):
    settings = Settings(monitor="val_loss", metric="loss", maximize=False, rungs=(1,), reduction_factor=2.0,
                        ranks=1, count=1)
    task = TrialTask(str(tmp_path), 0, settings)
    for name, value in flags.items():
        setattr(task, name, value)
    return task


@pytest.mark.parametrize("flags, code, run_state, state", [
    ({}, 0, "done", "done"),
    ({}, 0, "preempted", "pending-preempted"),          # MPICH's mpiexec: 0 although the ranks exited 75
    ({}, PREEMPTED_EXIT, None, "pending-preempted"),
    ({"signalled": signal.SIGTERM}, -15, None, "pending-preempted"),
    ({}, 1, "failed", "failed"),
    ({}, 0, None, "failed"),                           # no record of this start: not done
    ({"stop_sent": True}, PREEMPTED_EXIT, "preempted", "stopped"),
    ({"stop_sent": True}, 0, "preempted", "stopped"),
    ({"stop_sent": True}, 0, "done", "done"),          # finished before the stop arrived
    ({"stop_sent": True}, 1, "failed", "failed"),
    ({"failure": "monitor val_accuracy: no 'accuracy'"}, PREEMPTED_EXIT, "preempted", "failed"),
])
def test_outcome_of_a_start(tmp_path, flags, code, run_state, state):
    got, reason = make_task(tmp_path, **flags).outcome(code, run_state)
    assert got == state.replace("pending-", "")
    assert (state == "done" or reason) and "\n" not in reason


def test_a_recorded_stop_is_kept_without_training_again(tmp_path):
    write_record(trial_dir(str(tmp_path), 0), {"state": "running", "decisions": [{"decision": "stop", "rung": 1}]})
    assert make_task(tmp_path).run() == "stopped"
    assert read_record(trial_dir(str(tmp_path), 0))["state"] == "stopped"


@pytest.mark.parametrize("indices, text", [([0, 1, 2, 3], "0-3"), ([4], "4"), ([0, 1, 2, 3, 5, 7, 8, 9], "0-3,5,7-9"),
                                           ([2, 4, 6], "2,4,6")])
def test_array_indices(indices, text):
    assert array_indices(indices) == text


def test_ranked_puts_the_best_first_and_trials_without_values_last():
    rows = [{"trial": f"trial-{i:04d}", "value": v} for i, v in enumerate([0.3, NAN, 0.1, 0.2])]
    assert [r["trial"][-1] for r in ranked(rows, False)] == ["2", "3", "0", "1"]
    assert [r["trial"][-1] for r in ranked(rows, True)] == ["0", "3", "2", "1"]


def test_array_script_runs_the_task_with_literal_values_forwards_signals_and_requeues(tmp_path):
    out = "/sweeps/$(touch X)/it's here"
    script = tmp_path / "array.job"
    text = render_file("sweep_array", {"out": out, "array": "0-3,5%2", "ntasks_per_node": "2"}, str(script))
    assert "#SBATCH --array=0-3,5%2" in text and "#SBATCH --requeue" in text
    python = str(tmp_path / "bin" / "stub-python")
    code, argv, signals, requeue, output = run_under_stub(tmp_path, script, {"HPCRNN_PYTHON": python,
                                                                            "SLURM_ARRAY_TASK_ID": "5"})
    assert created_files(tmp_path) == [], output
    assert argv == ["stub-python", "-m", "hpcrnn", "sweep", "task", out, "--index", "5", "--launch-command",
                    "srun --mpi=pmi2 -K1 --cpus-per-task=1 --cpu-bind=cores"], output
    assert signals == ["USR1"] and code == 75 and requeue == ["requeue", "42"], output


def test_records_survive_json_with_nan(tmp_path):
    write_record(str(tmp_path), {"rungs": {"1": NAN}})
    assert math.isnan(read_record(str(tmp_path))["rungs"]["1"])
    assert json.loads((tmp_path / "sweep.json").read_text(), parse_constant=lambda c: c)["rungs"]["1"] == "NaN"


class FakeChild:
    """Stands in for the training process: running, and records the signals it is sent."""

    def __init__(self):
        self.signals = []

    def poll(self):
        return None

    def send_signal(self, signum):
        self.signals.append(signum)


def eval_line(epoch, **metrics):
    return json.dumps({"event": "eval", "split": "val", "step": 10 * epoch, "epoch": epoch, **metrics}) + "\n"


def follow_lines(tmp_path, lines, rungs=(1, 3), others=()):
    """Runs TrialTask.follow over metrics lines of trial 0 (trials 1.. recorded `others` at rung 1)."""
    out = str(tmp_path)
    for index, value in enumerate(others, 1):
        write_record(trial_dir(out, index), {"rungs": {"1": value}})
    settings = Settings(monitor="val_loss", metric="loss", maximize=False, rungs=rungs, reduction_factor=2.0,
                        ranks=1, count=1 + len(others))
    task = TrialTask(out, 0, settings, say=lambda text: None)
    task.child = FakeChild()
    folder = trial_dir(out, 0)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as handle:
        handle.writelines(lines)
    record = read_record(folder)
    task.follow(MetricsTail(os.path.join(folder, "metrics.jsonl")), record)
    return task, record


def test_follow_decides_at_rung_epochs_only_and_stops_a_trial_once(tmp_path):
    lines = [json.dumps({"step": 1, "epoch": 0, "loss": 1.0}) + "\n", eval_line(1, loss=0.5), eval_line(2, loss=0.4),
             eval_line(3, loss=0.3)]
    task, record = follow_lines(tmp_path / "a", lines)
    assert [(d["rung"], d["decision"]) for d in record["decisions"]] == [(1, "promote"), (3, "promote")]
    assert record["rungs"] == {"1": 0.5, "3": 0.3} and task.child.signals == []
    assert read_record(trial_dir(str(tmp_path / "a"), 0))["decisions"] == record["decisions"], "written at once"
    task, record = follow_lines(tmp_path / "b", lines, others=(0.1, 0.2))
    assert [(d["rung"], d["decision"]) for d in record["decisions"]] == [(1, "stop")], "nothing after the stop"
    assert task.child.signals == [signal.SIGUSR1] and task.stop_sent


def test_follow_fails_a_trial_whose_eval_lines_lack_the_monitored_metric(tmp_path):
    task, record = follow_lines(tmp_path, [eval_line(1, accuracy=0.5)], rungs=())
    assert task.failure == "monitor val_loss: the eval lines have no 'loss' (they have accuracy)"
    assert task.child.signals == [signal.SIGUSR1] and record["decisions"] == []
    assert task.outcome(PREEMPTED_EXIT, "preempted") == ("failed", task.failure)
