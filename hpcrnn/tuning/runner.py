"""Starts a sweep: writes DIR/trials.json and every trial's config.toml (a rerun must find the same trials),
then runs the unfinished trials here, K at a time under MPICH's mpiexec, or submits them as one Slurm job
array (jobs/sweep_array.sbatch) whose tasks run the same trial supervisor (task.py)."""
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time

from hpcrnn.checkpoint import PREEMPTED_EXIT
from hpcrnn.errors import ConfigError
from hpcrnn.log import int_ranges
from hpcrnn.rundir import RunDir, take_lock
from hpcrnn.tuning.record import FINISHED, read_record, read_sweep, trial_dir, write_record, write_sweep
from hpcrnn.tuning.task import TrialTask, settings_from
from hpcrnn.tuning.trials import expand, format_params, trial_config

SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def prepare(spec, out, ranks):
    """Validates every trial's config, checks DIR against an earlier start, writes trials.json and each
    trial's config.toml (kept when present: train writes the same). Returns the sweep record."""
    from hpcrnn.config import to_toml
    trials = expand(spec)
    configs = [trial_config(spec, trial, out) for trial in trials]
    earlier = read_sweep(out)
    if earlier:
        check_same_sweep(earlier, spec, len(trials), out)
    for trial, config in zip(trials, configs):
        folder = trial_dir(out, trial.index)
        os.makedirs(folder, exist_ok=True)
        path = RunDir(folder).config
        if not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write(to_toml(config))
    sweep = {"spec": os.path.abspath(spec.path), "identity": spec.identity(), "monitor": spec.monitor,
             "metric": spec.metric, "maximize": spec.maximize, "rungs": list(spec.rungs),
             "reduction_factor": spec.reduction_factor, "ranks": ranks, "keys": spec.swept_keys,
             "trials": [{"index": t.index, "name": t.name, "params": t.params} for t in trials],
             "jobs": (earlier or {}).get("jobs", [])}
    write_sweep(out, sweep)
    return sweep


def check_same_sweep(earlier, spec, count, out):
    """A rerun on DIR must describe the same trials (it may add trials); otherwise a one-line error."""
    now = json.loads(json.dumps(spec.identity()))
    before = earlier.get("identity", {})
    for key in now:
        if now[key] != before.get(key):
            raise ConfigError(f"{out} holds another sweep ({key} differs from {earlier.get('spec', 'its spec')}): "
                              "use another --out, or the spec it was started with")
    if count < len(earlier.get("trials", [])):
        raise ConfigError(f"{out} holds {len(earlier['trials'])} trials; the spec now gives {count}: "
                          "a sweep may grow, not shrink (use another --out)")


def unfinished(out, sweep):
    return [t["index"] for t in sweep["trials"] if read_record(trial_dir(out, t["index"]))["state"] not in FINISHED]


def launch_prefix(launch_command, ranks):
    """Launcher words before `-n P`: the given command, else MPICH's mpiexec for P > 1, else none (1 rank)."""
    if launch_command:
        return shlex.split(launch_command)
    if ranks == 1:
        return []
    from hpcrnn.scaling.sweep import launcher_prefix
    return launcher_prefix("mpiexec", "")


class SweepLock:
    """DIR/sweep.lock, held by the one local `sweep run` working on DIR."""

    def __init__(self, out):
        self.path, self.fd = os.path.join(out, "sweep.lock"), None

    def __enter__(self):
        self.fd, holder = take_lock(self.path, f"pid {os.getpid()}")
        if holder:
            raise ConfigError(f"{os.path.dirname(self.path)}: another 'hpcrnn sweep run' works on it ({holder})")
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)


class LocalPool:
    """Runs trials in threads, `parallel` at a time; USR1/TERM/INT are passed on to every running trial and
    no further trial starts. Each running trial's ranks are bound to cores of their own (a slot of `ranks`
    cores of this process's affinity set, given back when the trial ends), unless the launch command binds
    already or the slots do not fit the cores (then a warning, and the launcher places the ranks)."""

    def __init__(self, out, sweep, parallel, prefix, say):
        from hpcrnn.placement import core_slots, has_binding, launcher_flavour
        self.out, self.settings, self.parallel, self.prefix, self.say = out, settings_from(sweep), parallel, prefix, say
        self.running, self.signalled, self.states = {}, 0, {}
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.free = core_slots(cpus, self.settings.ranks, parallel) if cpus else None
        self.flavour = launcher_flavour(prefix) if prefix else "unknown"
        if self.free is None:
            say(f"warning: {parallel} trial(s) at once x {self.settings.ranks} rank(s) need more than the "
                f"{len(cpus)} core(s) here: trials run unbound and share cores (lower --parallel)")
        elif prefix and not has_binding(prefix) and self.flavour not in ("mpich", "openmpi"):
            say(f"warning: cannot bind trials' ranks with launcher {prefix[0]!r} (MPICH or Open MPI only): unbound")

    def handle(self, signum, frame):
        self.signalled = signum
        for task in list(self.running.values()):
            task.forward(signum)

    def run(self, indices):
        queue = list(indices)
        previous = {sig: signal.signal(sig, self.handle) for sig in SIGNALS}
        try:
            while self.running or (queue and not self.signalled):
                while queue and len(self.running) < self.parallel and not self.signalled:
                    self.start(queue.pop(0))
                for thread in list(self.running):
                    thread.join(timeout=0.1)
                    if not thread.is_alive():
                        task = self.running.pop(thread)
                        if task.cpus is not None:
                            self.free.append(task.cpus)
                        self.report(task.index)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.states

    def start(self, index):
        cpus = self.free.pop(0) if self.free else None
        task = TrialTask(self.out, index, self.settings, self.prefix, say=self.say, cpus=cpus,
                         flavour=self.flavour)
        thread = threading.Thread(target=self.run_task, args=(task,), name=f"trial-{index}")
        self.running[thread] = task
        thread.start()

    def run_task(self, task):
        try:
            self.states[task.index] = task.run()
        except Exception as error:      # a trial's own failure (a full disk, say) must not end the others
            record = read_record(task.folder)
            record.update(state="failed", reason=f"{type(error).__name__}: {error}")
            write_record(task.folder, record)
            self.states[task.index] = "failed"

    def report(self, index):
        record = read_record(trial_dir(self.out, index))
        detail = {"done": f"{record.get('steps')} steps", "stopped": f"after {record.get('steps')} steps",
                  "preempted": "checkpointed; run again to resume"}.get(record["state"], record.get("reason", ""))
        self.say(f"trial-{index:04d} {record['state']}: {detail} ({record['wall_s']:.1f} s)")


def run_local(out, sweep, parallel, prefix, say=print):
    """Runs the unfinished trials (the caller holds the SweepLock); returns 0, PREEMPTED_EXIT after a signal
    (run again to continue) or 1 when a trial failed."""
    todo = unfinished(out, sweep)
    started = time.perf_counter()
    if len(todo) < len(sweep["trials"]):
        say(f"{len(sweep['trials']) - len(todo)} trial(s) finished before: skipped")
    pool = LocalPool(out, sweep, parallel, prefix, say)
    states = pool.run(todo)
    counts = {state: list(states.values()).count(state) for state in ("done", "stopped", "failed", "preempted")}
    outcome = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "nothing to do"
    say(f"sweep {out}: {len(states)} trial(s) run in {time.perf_counter() - started:.1f} s: {outcome}; "
        f"next: hpcrnn sweep collect {out}")
    if pool.signalled or counts["preempted"]:
        say(f"interrupted by signal {pool.signalled}: run the same command again to resume")
        return PREEMPTED_EXIT
    return 1 if counts["failed"] else 0


def array_indices(indices):
    """`0-3,5,7-9` from sorted trial indices."""
    return int_ranges(indices)


def queued_jobs(job_ids):
    """Those of `job_ids` that Slurm still has queued or running."""
    if not job_ids:
        return []
    try:
        result = subprocess.run(["squeue", "-h", "-o", "%F", "-j", ",".join(job_ids)], capture_output=True, text=True)
    except FileNotFoundError:
        return []
    return sorted(set(result.stdout.split()) & set(job_ids)) if result.returncode == 0 else []


def submit_array(out, sweep, parallel, job_set, say=print):
    """Renders jobs/sweep_array.sbatch for the unfinished trials and submits it; returns 0."""
    from hpcrnn.scaling.render import parse_assignments, render_file
    todo = unfinished(out, sweep)
    if not todo:
        say(f"all {len(sweep['trials'])} trials of {out} are finished; next: hpcrnn sweep collect {out}")
        return 0
    if not shutil.which("sbatch"):
        raise ConfigError("--launcher slurm: sbatch not found (run on a Slurm login node, or --launcher local)")
    busy = queued_jobs(sweep["jobs"])
    if busy:
        raise ConfigError(f"{out}: job {busy[0]} of this sweep is still queued or running; wait for it to end "
                          f"(or scancel it) before submitting again")
    ranks = sweep["ranks"]
    values = parse_assignments(job_set)
    per_node = int(values.setdefault("ntasks_per_node", str(ranks)))
    values.setdefault("nodes", str(math.ceil(ranks / per_node)))
    values.setdefault("job_name", "hpcrnn-sweep")
    values.setdefault("log", os.path.join(out, "slurm-%A_%a.out"))
    values.update(out=out, array=array_indices(todo) + (f"%{parallel}" if parallel else ""))
    script = os.path.join(out, "sweep_array.sbatch")
    render_file("sweep_array", values, script)
    result = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True, cwd=out)
    if result.returncode != 0:
        said = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()] or ["no output"]
        raise ConfigError(f"sbatch {script} failed (exit {result.returncode}): {said[-1].strip()}")
    job_id = result.stdout.strip().split(";")[0]
    for index in todo:
        record = read_record(trial_dir(out, index))
        record.update(state="pending", reason=f"submitted in job array {job_id}")
        write_record(trial_dir(out, index), record)
    write_sweep(out, {**sweep, "jobs": [*sweep["jobs"], job_id]})
    say(f"submitted job array {job_id}: {len(todo)} trial(s) ({values['array']}); "
        f"follow with: hpcrnn sweep status {out}")
    return 0


def describe(sweep, say=print, most=20):
    """One line per trial (the first `most`)."""
    for trial in sweep["trials"][:most]:
        say(f"  {trial['name']}: {format_params(trial['params'])}")
    if len(sweep["trials"]) > most:
        say(f"  ... and {len(sweep['trials']) - most} more (DIR/trials.json)")
