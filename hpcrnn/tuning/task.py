"""Runs one trial: starts `hpcrnn train --config DIR/trial-NNNN/config.toml` (resume auto) under the launcher,
follows its metrics.jsonl, takes the ASHA decision at each rung and stops a trial that does not go on (USR1:
it checkpoints at the next step and exits), passes USR1/TERM it receives on to the training, and keeps the
trial's record (DIR/trial-NNNN/sweep.json). The same code runs a local trial and a Slurm array task."""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from hpcrnn.checkpoint import PREEMPTED_EXIT
from hpcrnn.placement import has_binding, slot_flags
from hpcrnn.rundir import RunDir
from hpcrnn.tuning import asha
from hpcrnn.tuning.record import (FINISHED, RECORD_FILE, MetricsTail, evals_of, last_step, read_metrics,
                                  read_record, read_summary, trial_dir, write_record)

POLL_S = 0.05                 # how often the trial's metrics.jsonl is read while it trains


@dataclass(frozen=True)
class Settings:
    """What every trial of a sweep shares (stored in DIR/trials.json)."""
    monitor: str
    metric: str
    maximize: bool
    rungs: tuple
    reduction_factor: float
    ranks: int
    count: int                # number of trials


class TrialTask:
    """One trial's supervisor. `prefix`: launcher words before `-n P` (empty: run 1 rank directly)."""

    def __init__(self, out, index, settings, prefix=(), say=print, cpus=None, flavour="unknown"):
        """cpus: the cores this trial's ranks are bound to (one each; None: leave placement to the launcher);
        flavour: the launcher's (hpcrnn.placement.launcher_flavour), which says how to bind."""
        self.out, self.index, self.settings, self.prefix, self.say = out, index, settings, list(prefix), say
        self.cpus, self.flavour = cpus, flavour
        self.folder = trial_dir(out, index)
        self.child, self.signalled, self.stop_sent, self.failure = None, 0, False, None
        self.start_mark = 0.0

    def forward(self, signum):
        """A preemption signal for this trial (SIGINT is passed on as SIGTERM: checkpoint, then stop)."""
        self.signalled = signum
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def command(self):
        train = [sys.executable, "-m", "hpcrnn", "train", "--config", RunDir(self.folder).config]
        listed = ",".join(str(cpu) for cpu in self.cpus or ())
        if not self.prefix and self.settings.ranks == 1:
            return ["taskset", "-c", listed, *train] if self.cpus and shutil.which("taskset") else train
        binding = slot_flags(self.flavour, self.cpus) if self.cpus and not has_binding(self.prefix) else []
        return [*self.prefix, *binding, "-n", str(self.settings.ranks), *train]

    def run(self):
        """Trains the trial to its end, a stop or a preemption; returns its state: done, stopped, failed or
        preempted (unfinished: run it again to resume)."""
        record = read_record(self.folder)
        if record["state"] in FINISHED:
            return record["state"]
        if any(d["decision"] == "stop" for d in record["decisions"]):   # stopped, but not recorded as such
            record["state"] = "stopped"
            write_record(self.folder, record)
            return "stopped"
        if self.signalled:
            return "preempted"
        record.update(state="running", host=socket.gethostname(), pid=os.getpid(), starts=record["starts"] + 1,
                      reason="")
        write_record(self.folder, record)
        started = time.time()
        # a summary.json newer than this write is this start's (file times, as jobs/train.sbatch compares them)
        self.start_mark = os.path.getmtime(os.path.join(self.folder, RECORD_FILE))
        with open(os.path.join(self.folder, "train.log"), "a") as log:
            command = self.command()
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            self.child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            if self.signalled:                  # arrived between the check above and Popen
                self.forward(self.signalled)
            tail = MetricsTail(RunDir(self.folder).metrics)
            while self.child.poll() is None:
                self.follow(tail, record)
                time.sleep(POLL_S)
            self.follow(tail, record)
        return self.finish(record, self.child.returncode, started)

    def follow(self, tail, record):
        """Takes the rung decisions due in the records written since the last call."""
        decided = {d["rung"] for d in record["decisions"]}
        for line in evals_of(tail.new_records()):
            epoch = line.get("epoch")
            if self.stop_sent:
                return
            if self.settings.metric not in line:      # the sweep could neither stop nor rank this trial
                have = ", ".join(k for k in line if k not in ("event", "split", "step", "epoch", "count"))
                self.failure = (f"monitor {self.settings.monitor}: the eval lines have no '{self.settings.metric}' "
                                f"(they have {have})")
                self.stop()
            elif epoch in self.settings.rungs and epoch not in decided:
                self.decide(record, epoch, float(line[self.settings.metric]), line.get("step"))
                decided.add(epoch)

    def decide(self, record, rung, value, step):
        s = self.settings
        record["rungs"][str(rung)] = value
        write_record(self.folder, record)           # first: a trial deciding at the same moment sees it
        decision = asha.rung_decision(self.out, self.index, s.count, rung, value, step,
                                      (s.monitor, s.reduction_factor, s.maximize))
        record["decisions"].append(decision)
        write_record(self.folder, record)
        if decision["decision"] == "stop":
            self.say(f"{os.path.basename(self.folder)}: stop at step {step}: {decision['reason']}")
            self.stop()

    def stop(self):
        self.stop_sent = True
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGUSR1)

    def finish(self, record, code, started):
        """Records the outcome of this start; returns the trial's state."""
        summary = read_summary(self.folder)
        fresh = summary and os.path.getmtime(RunDir(self.folder).summary) >= self.start_mark
        run_state = summary.get("state") if fresh else None
        record["wall_s"] += time.time() - started
        record["train_s"] += float(summary.get("wall_s", 0.0)) if fresh else 0.0
        record["steps"] = summary.get("steps") if fresh else last_step(read_metrics(self.folder))
        record["exit_code"] = code
        record["state"], record["reason"] = self.outcome(code, run_state)
        write_record(self.folder, record)
        return record["state"]

    def outcome(self, code, run_state):
        """(state, reason) from the exit code and the run's own record (a launcher may report 0 for ranks that
        exited 75, as MPICH's mpiexec does)."""
        if self.failure:
            return "failed", self.failure
        stopped = run_state == "preempted" or code == PREEMPTED_EXIT
        if self.stop_sent and (stopped or run_state == "done"):
            return ("stopped", "stopped at a rung") if stopped else ("done", "finished before the stop arrived")
        if run_state == "done" and code == 0:
            return "done", ""
        if stopped or (self.signalled and run_state != "failed"):
            return "preempted", f"preempted (signal {self.signalled or '?'}); resumes from its checkpoint"
        return "failed", f"hpcrnn train exited with {code}: {last_error(self.folder)}"


def last_error(folder):
    """The last line of the trial's train.log that reads like an error, else its last line."""
    try:
        with open(os.path.join(folder, "train.log"), errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        return "no train.log"
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def settings_from(sweep):
    """Settings from DIR/trials.json."""
    return Settings(monitor=sweep["monitor"], metric=sweep["metric"], maximize=sweep["maximize"],
                    rungs=tuple(sweep["rungs"]), reduction_factor=sweep["reduction_factor"],
                    ranks=sweep["ranks"], count=len(sweep["trials"]))
