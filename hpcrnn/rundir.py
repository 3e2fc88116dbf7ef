"""The run directory: the one place that knows its file names, and writes to it from rank 0 only.

    RUN_DIR/config.toml      the resolved config            RUN_DIR/summary.json   the outcome of the run
    RUN_DIR/metrics.jsonl    one JSON record a line          RUN_DIR/checkpoints/   step-NNNNNNNNN.h5 files
    RUN_DIR/run.lock         held (flock) by the run          RUN_DIR/checkpoints/best.h5  the best monitored one
    RUN_DIR/report.md        `hpcrnn report` (plots in RUN_DIR/report/)
Other ranks hold the same object and may read its paths; its writes do nothing there (as log.Writer)."""
import fcntl
import json
import os
import socket

from hpcrnn import checkpoint as ckpt
from hpcrnn.log import write_json


def take_lock(path, label):
    """An exclusive flock on the file at path, held while the returned descriptor stays open (the kernel drops
    it when the process ends, also on a crash): (fd, None) when taken, `label` written into the file;
    (None, what the holder wrote) when another process holds it; (None, None) on a file system without flock
    (run unlocked rather than not at all)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return None, holder
    except OSError:
        os.close(fd)
        return None, None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{label}\n".encode(), 0)
    return fd, None


class RunDir:
    """Paths of one run directory. writes=True on the one process that writes it (rank 0 of a run:
    `RunDir(path, writes=comm.rank == 0)`); readers (evaluate, report, sweeps) leave it False."""

    def __init__(self, path, writes=False):
        self.path = path
        self.writes = writes
        self.config = os.path.join(path, "config.toml")
        self.metrics = os.path.join(path, "metrics.jsonl")
        self.summary = os.path.join(path, "summary.json")
        self.checkpoints = os.path.join(path, "checkpoints")
        self.best_checkpoint = ckpt.best_path(self.checkpoints)
        self.lock_file = os.path.join(path, "run.lock")
        self.report = os.path.join(path, "report.md")
        self.report_plots = os.path.join(path, "report")
        self._lock_fd = None

    def checkpoint_for(self, step):
        return ckpt.path_for(self.checkpoints, step)

    def checkpoint_files(self):
        """Checkpoint files, newest first."""
        return ckpt.list_checkpoints(self.checkpoints)

    def held_run(self):
        """Names of the files that show an earlier run lives here (empty for a fresh directory)."""
        return (["metrics.jsonl"] if os.path.exists(self.metrics) else []) + \
            (["checkpoints"] if self.checkpoint_files() else [])

    def create(self):
        if self.writes:
            os.makedirs(self.path, exist_ok=True)

    def lock(self):
        """Rank 0 takes an exclusive lock on the directory for as long as the run lives (the kernel drops it
        when the process ends, also on a crash). Returns None, or a one-line message naming the holder."""
        if not self.writes:
            return None
        self._lock_fd, holder = take_lock(self.lock_file, f"host {socket.gethostname()} pid {os.getpid()}")
        if holder:
            return (f"run directory {self.path} is in use by a running job ({holder}); wait for it to end "
                    "or choose another --run-dir")
        return None

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def trim_metrics(self, step):
        """Keeps the records of metrics.jsonl up to `step` (the step training resumes after), dropping later
        ones (steps that will be run again) and anything after the first incomplete or unreadable line."""
        if not self.writes or not os.path.exists(self.metrics):
            return
        with open(self.metrics, "rb") as handle:
            lines = handle.read().split(b"\n")
        kept = []
        for line in lines[:-1]:          # the last piece has no newline: empty, or half a record
            try:
                record = json.loads(line)
            except ValueError:
                break
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line + b"\n")
        tmp = f"{self.metrics}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.writelines(kept)
        os.replace(tmp, self.metrics)

    def write_config(self, toml_text):
        if self.writes:
            with open(self.config, "w") as handle:
                handle.write(toml_text)

    def write_summary(self, summary):
        if self.writes:
            write_json(self.summary, summary)


def checkpoint_folder(path):
    """Where checkpoints of `path` live: RUN_DIR/checkpoints for a run directory, else `path` itself."""
    inner = os.path.join(path, "checkpoints")
    return inner if os.path.isdir(inner) else path
