"""The files of a sweep folder: DIR/trials.json (the sweep: its spec identity, settings and trials) and, per
trial, DIR/trial-NNNN/sweep.json (its supervisor's record: state, rung values, decisions, times) beside the
run directory's own metrics.jsonl and summary.json, which are only read here."""
import json
import math
import os

from hpcrnn.errors import ConfigError
from hpcrnn.log import write_json
from hpcrnn.rundir import RunDir
from hpcrnn.tuning.trials import trial_name

SWEEP_FILE = "trials.json"
RECORD_FILE = "sweep.json"
STATES = ("pending", "running", "done", "failed", "stopped")
FINISHED = ("done", "stopped")        # skipped by a rerun; everything else is (re)started and resumes


def trial_dir(out, index):
    return os.path.join(out, trial_name(index))


def read_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return default


def read_sweep(out):
    return read_json(os.path.join(out, SWEEP_FILE))


def load_sweep(out):
    """DIR/trials.json; a one-line error when DIR is not a sweep folder."""
    sweep = read_sweep(out)
    if not sweep:
        raise ConfigError(f"{out}: not a sweep folder (no {SWEEP_FILE}; start one with hpcrnn sweep run)")
    return sweep


def write_sweep(out, sweep):
    write_json(os.path.join(out, SWEEP_FILE), sweep)


def new_record():
    return {"state": "pending", "rungs": {}, "decisions": [], "starts": 0, "wall_s": 0.0, "train_s": 0.0}


def read_record(folder):
    """The trial's record; a fresh one when it has none yet. `rungs` maps the rung epoch (a string) to the
    monitored value the trial had there; the others' decisions read it."""
    return {**new_record(), **(read_json(os.path.join(folder, RECORD_FILE)) or {})}


def write_record(folder, record):
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, RECORD_FILE), record)


def read_summary(folder):
    return read_json(RunDir(folder).summary, {})


def parse_lines(data):
    """JSON records of complete lines; an unreadable line (a run killed mid-write) is skipped."""
    records = []
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_metrics(folder):
    try:
        with open(RunDir(folder).metrics, "rb") as handle:
            return parse_lines(handle.read())
    except FileNotFoundError:
        return []


def evals_of(records):
    return [r for r in records if r.get("event") == "eval" and r.get("split", "val") == "val"]


def last_step(records):
    steps = [r["step"] for r in records if "event" not in r and isinstance(r.get("step"), int)]
    return max(steps, default=0)


def value_of(record, metric):
    """The record's monitored value as a float (NaN when missing or not a number)."""
    value = record.get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def best_eval(evals, metric, maximize):
    """(value, step, epoch) of the best finite monitored value, or None."""
    finite = [e for e in evals if math.isfinite(value_of(e, metric))]
    if not finite:
        return None
    best = (max if maximize else min)(finite, key=lambda e: value_of(e, metric))
    return value_of(best, metric), best.get("step"), best.get("epoch")


class MetricsTail:
    """Follows a run's metrics.jsonl as it grows: new_records() returns the records of the lines completed since
    the last call. A file that was replaced or cut (a resume trims it) is read again from its start."""

    def __init__(self, path):
        self.path, self.offset, self.inode = path, 0, None

    def new_records(self):
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return []
        if status.st_ino != self.inode or status.st_size < self.offset:
            self.inode, self.offset = status.st_ino, 0
        if status.st_size == self.offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return parse_lines(complete)
