"""The stall inspector and abort-on-error: a stuck or failing rank ends the whole job promptly."""
import subprocess
import sys
import time

from helpers import mpiexec

STUCK = """
import time, numpy as np
from hpcrnn.comm import world, allreduce_sum
comm = world()
if comm.rank == 1:
    time.sleep(120)
allreduce_sum(comm, np.ones(10), timeout_s=2.0)
"""


def test_stuck_rank_is_named_and_job_aborts():
    start = time.perf_counter()
    result = subprocess.run([mpiexec(), "-n", "3", sys.executable, "-c", STUCK], capture_output=True, text=True,
                            timeout=100)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert "missing rank(s): [1]" in result.stderr, result.stderr
    assert elapsed < 30, elapsed
