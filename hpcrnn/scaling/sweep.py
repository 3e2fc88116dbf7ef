"""Runs a strong or weak scaling sweep on this machine or inside a Slurm allocation: per rank count an
Allreduce timing and a short training run under the launcher, each summarised into a result.json."""
import glob
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from hpcrnn.errors import ConfigError
from hpcrnn.scaling import model_fit
from hpcrnn.log import write_json
from hpcrnn.scaling.results import RESULT_NAME, cores_available, summarize_run
from hpcrnn.checkpoint import PREEMPTED_EXIT   # also the sweep's exit code after a stop signal: requeue to continue


@dataclass(frozen=True)
class Settings:
    """What every run of a sweep shares; `batch_size` is global (strong) or per rank (weak)."""
    mode: str
    steps: int = 40
    warmup: int = 5
    batch_size: int = 64
    data: str = ""
    kind: str = "sines"
    length: int = 50
    features: int = 8
    cell: str = "lstm"
    hidden: int = 64
    layers: int = 1
    threads: int = 1
    train_set: tuple = ()      # extra `hpcrnn train --set section.key=value` overrides

    def global_batch(self, ranks):
        return self.batch_size if self.mode == "strong" else self.batch_size * ranks


def settings_record(settings):
    """The settings as stored in result.json (JSON types, so a stored copy compares equal)."""
    return json.loads(json.dumps(asdict(settings)))


def check_settings(settings, ranks_list, cores, oversubscribe_ok):
    if settings.mode not in ("strong", "weak"):
        raise ConfigError(f"--mode: expected strong or weak, got {settings.mode!r}")
    if not ranks_list or any(r < 1 for r in ranks_list):
        raise ConfigError("--ranks: expected positive rank counts, e.g. 1,2,4")
    if settings.steps <= settings.warmup:
        raise ConfigError(f"--steps {settings.steps} must exceed --warmup {settings.warmup}")
    if settings.mode == "strong" and settings.batch_size < max(ranks_list):
        raise ConfigError(f"--batch-size {settings.batch_size}: strong scaling needs at least one sample per rank")
    too_many = [r for r in ranks_list if r * settings.threads > cores]
    if too_many and not oversubscribe_ok:
        raise ConfigError(f"--ranks {','.join(map(str, too_many))} x {settings.threads} thread(s) exceed the "
                          f"{cores} available cores; add --oversubscribe-ok (those runs are marked oversubscribed)")


class ChildRunner:
    """Runs one child process at a time; USR1/TERM received meanwhile are forwarded to it and remembered."""

    def __init__(self):
        self.child, self.signalled, self.other_cpu_cores, self.previous = None, 0, 0.0, {}

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self.forward) for sig in (signal.SIGUSR1, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self, signum, frame):
        self.signalled = signum
        if self.child and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self, command, log_path, env=None):
        """Runs `command` to its end; sets other_cpu_cores (see busy_seconds) and returns the exit code."""
        busy, mine, start = busy_seconds(), children_seconds(), time.perf_counter()
        with open(log_path, "a") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            self.child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            code = self.child.wait()
        self.child = None
        other = (busy_seconds() - busy) - (children_seconds() - mine)
        self.other_cpu_cores = max(other, 0.0) / max(time.perf_counter() - start, 1e-9)
        return code


def busy_seconds():
    """CPU seconds all processes of this machine have used (/proc/stat; 0 where it does not exist).

    Minus the CPU seconds of our own children it gives the cores other work kept busy during a run (under
    srun the ranks are not our children, so there it also counts the run itself)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launcher_prefix(launcher, launch_command):
    """The command words before `-n P`: --launch-command as given, else MPICH's mpiexec."""
    if launch_command:
        return shlex.split(launch_command)
    if launcher != "mpiexec":
        raise ConfigError(f"--launcher {launcher}: only mpiexec runs here (slurm submits a job)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    recorded = os.path.join(root, ".venv", ".mpiexec")
    if os.environ.get("HPCRNN_MPIEXEC"):
        return shlex.split(os.environ["HPCRNN_MPIEXEC"])
    if os.path.exists(recorded):
        return [open(recorded).read().strip()]
    found = shutil.which("mpiexec.mpich") or shutil.which("mpiexec")
    if not found:
        raise ConfigError("no MPI launcher found: install MPICH or give --launch-command")
    return [found]


def child_env(settings):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(settings.threads)
    return env


def make_data(settings, ranks, out, runner):
    """The dataset of one run: --data as given, else a synthetic file sized to `steps` global batches."""
    if settings.data:
        return settings.data
    sequences = settings.global_batch(ranks) * settings.steps
    path = os.path.join(out, "data", f"{settings.kind}-n{sequences}-t{settings.length}-f{settings.features}.h5")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        command = [sys.executable, "-m", "hpcrnn", "synth", "--kind", settings.kind, "--sequences", str(sequences),
                   "--length", str(settings.length), "--features", str(settings.features), "--out", path]
        code = runner.run(command, os.path.join(out, "data", "synth.log"))
        if code != 0:
            raise ConfigError(f"hpcrnn synth failed (exit {code}): see {os.path.join(out, 'data', 'synth.log')}")
    return path


def train_command(settings, ranks, data, run_dir):
    return [sys.executable, "-m", "hpcrnn", "train", "--data", data, "--cell", settings.cell,
            "--hidden", str(settings.hidden), "--layers", str(settings.layers),
            "--batch-size", str(settings.global_batch(ranks)), "--run-dir", run_dir, "--resume", "never",
            "--set", f"train.max_steps={settings.steps}", "--set", "train.epochs=1000000",
            "--set", "data.val_fraction=0", "--set", "checkpoint.every_epochs=0",
            "--set", "train.progress=none", "--set", f"train.numba_threads={settings.threads}",
            *[word for item in settings.train_set for word in ("--set", item)]]


def measure_allreduce(prefix, ranks, out, runner, env):
    """The Allreduce timing at `ranks` ranks (kept from an earlier sweep into the same folder)."""
    path = os.path.join(out, "allreduce", f"p{ranks:04d}.json")
    if ranks == 1 or os.path.exists(path):
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    command = [*prefix, "-n", str(ranks), sys.executable, "-m", "hpcrnn", "scaling", "allreduce", "--out", path]
    return runner.run(command, os.path.join(out, "allreduce", "allreduce.log"), env)


def fit_allreduce_files(out, cores):
    """Fits alpha/beta over every allreduce/p*.json of the folder and stores out/allreduce.json."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "allreduce", "p*.json"))):
        with open(path) as handle:
            rows.extend(json.load(handle)["measurements"])
    if not rows:
        return None
    fit = {**model_fit.fit_allreduce(rows, cores), "cores": cores, "measurements": rows}
    write_json(os.path.join(out, "allreduce.json"), fit)
    return fit


def run_one(settings, ranks, out, prefix, runner):
    """One training run; returns its result, None when it was interrupted by a signal."""
    run_dir = os.path.join(out, f"{settings.mode}-p{ranks:04d}")
    done = os.path.join(run_dir, RESULT_NAME)
    if os.path.exists(done):
        with open(done) as handle:
            kept = json.load(handle)
        if kept.get("settings") == settings_record(settings):
            return kept
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    data = make_data(settings, ranks, out, runner)
    command = [*prefix, "-n", str(ranks), *train_command(settings, ranks, data, run_dir)]
    code = runner.run(command, os.path.join(run_dir, "launch.log"), child_env(settings))
    if runner.signalled:
        return None
    if code != 0:
        raise ConfigError(f"the {ranks}-rank run failed (exit {code}): see {os.path.join(run_dir, 'launch.log')}")
    return summarize_run(run_dir, settings.mode, ranks, settings.global_batch(ranks), settings.warmup,
                         settings.threads, data, {"settings": settings_record(settings), "launcher": prefix,
                          "other_cpu_cores": runner.other_cpu_cores})


def run_sweep(settings, ranks_list, out, prefix, oversubscribe_ok=False, say=print):
    """Runs the sweep; returns 0, or PREEMPTED_EXIT when USR1/TERM interrupted it (rerun to continue)."""
    cores = cores_available()
    check_settings(settings, ranks_list, cores, oversubscribe_ok)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, f"sweep-{settings.mode}.json"), {**settings_record(settings), "ranks": ranks_list})
    with ChildRunner() as runner:
        for ranks in ranks_list:
            if measure_allreduce(prefix, ranks, out, runner, child_env(settings)) != 0 and not runner.signalled:
                raise ConfigError(f"the {ranks}-rank Allreduce timing failed: see {out}/allreduce/allreduce.log")
            result = None if runner.signalled else run_one(settings, ranks, out, prefix, runner)
            if result is None:
                say(f"sweep interrupted by signal {runner.signalled}; rerun (or requeue) to continue")
                return PREEMPTED_EXIT
            flag = " (oversubscribed)" if result["oversubscribed"] else ""
            say(f"{settings.mode} {ranks:>4d} ranks: {result['t_step'] * 1e3:8.2f} ms/step, "
                f"{result['throughput']:9.1f} samples/s{flag}")
    fit = fit_allreduce_files(out, cores)
    if fit:
        say(f"allreduce fit: alpha {fit['alpha'] * 1e6:.2f} us, beta {fit['beta'] * 1e9:.4f} ns/byte "
            f"({fit['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s)")
    return 0
