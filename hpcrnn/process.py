"""Process-wide settings, made by explicit calls: the CLI calls `setup_process()` first thing (programs that
use hpcrnn as a library call it before importing numpy if they want its thread defaults), and installs the
preemption signal handler (`StopSignal`) before anything else of a training run."""
import os
import signal

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def setup_process():
    """One BLAS thread per rank unless the user chose otherwise (the BLAS reads these when numpy loads)."""
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def cores_per_rank(config):
    """The cores this rank computes on: train.numba_threads, else SLURM_CPUS_PER_TASK, else 1. The model runs
    its batch as that many row blocks on as many threads (hpcrnn.rowblocks)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    return max(1, config.train.numba_threads or (int(slurm) if slurm.isdigit() else 1))


def set_threads(config):
    """numba's thread count for this rank: cores_per_rank (capped at numba's pool)."""
    import numba
    numba.set_num_threads(max(1, min(cores_per_rank(config), numba.config.NUMBA_NUM_THREADS)))


class StopSignal:
    """Remembers SIGUSR1/SIGTERM; the loop reduces the flag so all ranks stop at the same step."""

    def __init__(self):
        self.received = 0
        self._old = {}

    def install(self):
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def ignore_further(self):
        """Once the run's outcome is decided: later signals change nothing (Python would otherwise put the
        default handlers back while the interpreter shuts down, and a late signal would kill the process
        with 143/138 instead of the exit code that was chosen)."""
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
