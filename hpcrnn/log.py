"""Rank-0 output: JSON-lines metrics, a progress display (bar on a terminal, lines in a log), messages;
and the phase clock that times a step's phases.

Other ranks get a writer that does nothing, so the training loop never asks which rank it is on."""
import json
import os
import sys
import time


class Writer:
    """Writes metrics.jsonl and progress on rank 0; `Writer(None, active=False)` is silent."""

    def __init__(self, metrics_path, active=True, progress="auto", stream=None):
        self.active = active
        self.stream = stream or sys.stdout
        self._file = None
        self.open_metrics(metrics_path)
        if progress == "auto":
            progress = "bar" if self.stream.isatty() else "line"
        self.progress_mode = progress
        self._bar_open = False
        self._t_last = time.perf_counter()

    def open_metrics(self, metrics_path):
        """Appends metrics records to metrics_path from now on (nothing on an inactive writer or for None)."""
        if self.active and metrics_path:
            os.makedirs(os.path.dirname(os.path.abspath(metrics_path)), exist_ok=True)
            self._file = open(metrics_path, "a", buffering=1)

    def metrics(self, record):
        if self._file:
            try:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            except OSError as exc:
                raise OSError(f"cannot write metrics to {self._file.name}: {exc.strerror}") from None

    def progress(self, step, total, epoch, record, every):
        if not self.active or self.progress_mode == "none":
            return
        text = (f"epoch {epoch} step {step}/{total} loss {record['loss']:.5g} lr {record['lr']:.3g} "
                f"{record['samples_per_s']:.0f} samples/s")
        if self.progress_mode == "bar":
            width = 24
            filled = int(width * step / max(total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            self.stream.flush()
            self._bar_open = True
        elif step % every == 0 or step == total:
            self.say(text)

    def say(self, text):
        if not self.active:
            return
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self._bar_open and self.active:
            self.stream.write("\n")
        if self._file:
            self._file.close()
            self._file = None


class PhaseClock:
    """Times consecutive phases: lap(name) adds the seconds since the previous lap (or creation) to
    times[name]."""

    def __init__(self):
        self.times = {}
        self._last = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self._last
        self._last = now


def write_json(path, record):
    """Writes `record` as pretty JSON atomically (temporary file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def markdown_lines(header, rows):
    """The lines of a Markdown table; a row shorter than the header is padded with empty cells."""
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in list(row) + [""] * (len(header) - len(row))) + " |"
                    for row in rows]


def markdown_table(header, rows):
    """A Markdown table as one string."""
    return "\n".join(markdown_lines(header, rows))


def int_ranges(values):
    """Sorted integers as compact text: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8" (Slurm's --array and CPU lists)."""
    parts, start = [], None
    for position, value in enumerate(values):
        if start is None:
            start = value
        if position + 1 == len(values) or values[position + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)
