"""Shared test set-up: the tests/ folder on sys.path (for tests/helpers.py) and quiet non-zero MPI ranks.

Under mpiexec (more than one rank) a test that fails on any rank prints its failure and aborts the whole job at
once (the other ranks may be waiting in a collective), and every test has a time limit: after MPI_TEST_TIMEOUT_S
(or @pytest.mark.mpi_timeout(seconds)) SIGALRM fails the test, which aborts the job; a rank stuck inside a C call,
where no Python signal handler runs, is ended by faulthandler a grace period later, with its traceback (so
pytest's own faulthandler_timeout option, which would share that one timer, stays unset).
With HPCRNN_REQUIRE_EXTRAS=1 (set by `make test`) missing test extras are an error instead of skipped tests."""
import faulthandler
import os
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MPI_TEST_TIMEOUT_S = 120
HARD_KILL_GRACE_S = 15
REQUIRED_EXTRAS = ("torch", "matplotlib")


def _launcher_rank_size():
    env = os.environ
    rank = env.get("PMI_RANK", env.get("OMPI_COMM_WORLD_RANK", "0"))
    size = env.get("PMI_SIZE", env.get("OMPI_COMM_WORLD_SIZE", "1"))
    return int(rank), int(size)


RANK, SIZE = _launcher_rank_size()
UNDER_MPI = SIZE > 1
_stderr = None      # a duplicate of the real stderr: pytest's capture does not swallow what is written there


def pytest_configure(config):
    global _stderr
    config.addinivalue_line("markers", "mpi_timeout(seconds): time limit of a test under mpiexec "
                                       f"(default {MPI_TEST_TIMEOUT_S} s)")
    if os.environ.get("HPCRNN_REQUIRE_EXTRAS") == "1" and not UNDER_MPI:
        require_extras()
    if UNDER_MPI:
        from mpi4py import MPI  # noqa: F401  (every rank initialises MPI here, at the same point)
        _stderr = os.fdopen(os.dup(2), "w")
    # Under mpiexec every rank runs pytest; only rank 0 reports, unless a test fails on another rank.
    if RANK != 0:
        config.option.verbose = -2


def require_extras():
    for name in REQUIRED_EXTRAS:
        try:
            __import__(name)
        except Exception as exc:
            raise pytest.UsageError(f"make test needs the test extras: import {name} failed ({type(exc).__name__}: "
                                    f"{exc}); run `make setup-dev` (plain pytest skips those tests instead)")
    import shutil

    import h5py
    from helpers import mpiexec
    if not h5py.get_config().mpi:        # the tests of parallel HDF5 would skip
        raise pytest.UsageError("make test needs h5py built with MPI (parallel HDF5); run `make setup-dev`")
    if not shutil.which(mpiexec()):      # the tests that launch ranks would skip
        raise pytest.UsageError(f"make test needs the MPI launcher {mpiexec()!r}; run `make setup-dev`")


def abort_job(what, details):
    """Prints a rank's failure and ends every rank of the job (MPI_Abort)."""
    _stderr.write(f"\n===== rank {RANK} of {SIZE}: FAILED {what} =====\n{details}\n"
                  f"===== rank {RANK}: aborting the MPI job (tests/conftest.py) =====\n")
    _stderr.flush()
    time.sleep(1.0)      # lets the launcher forward this message before MPI_Abort ends the job (as comm.abort)
    from mpi4py import MPI
    MPI.COMM_WORLD.Abort(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if UNDER_MPI and report.failed:
        abort_job(f"{item.nodeid} ({report.when})", report.longreprtext)


def pytest_collectreport(report):
    if UNDER_MPI and report.failed:
        abort_job(f"collecting {report.nodeid}", report.longreprtext)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not UNDER_MPI:
        yield
        return
    marker = item.get_closest_marker("mpi_timeout")
    seconds = float(marker.args[0]) if marker else MPI_TEST_TIMEOUT_S

    def on_alarm(signum, frame):
        pytest.fail(f"{item.nodeid}: over its time limit of {seconds:g} s on rank {RANK} (tests/conftest.py; "
                    "@pytest.mark.mpi_timeout(seconds) sets another)", pytrace=True)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(seconds + min(HARD_KILL_GRACE_S, seconds), exit=True, file=_stderr)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()
