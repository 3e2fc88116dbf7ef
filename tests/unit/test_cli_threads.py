"""Thread settings: numba threads per rank from the config, else SLURM_CPUS_PER_TASK, else 1."""
import numba

from hpcrnn.cli import set_threads
from hpcrnn.config import load_config


def test_numba_threads_from_config_and_slurm(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    before = numba.get_num_threads()
    try:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
        set_threads(load_config(None))
        assert numba.get_num_threads() == 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
        set_threads(load_config(None))
        assert numba.get_num_threads() == 2
        set_threads(load_config(None, ["train.numba_threads=1"]))
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
