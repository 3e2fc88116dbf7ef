"""Process set-up: numba threads per rank from the config, else SLURM_CPUS_PER_TASK, else 1; BLAS thread defaults."""
import numba

from hpcrnn.process import set_threads
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


def test_setup_process_defaults_blas_threads_and_keeps_the_users(monkeypatch):
    from hpcrnn.process import setup_process
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    setup_process()
    import os
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"


def test_importing_the_cli_changes_no_environment(monkeypatch):
    import importlib
    import os
    import sys
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    sys.modules.pop("hpcrnn.cli", None)
    importlib.import_module("hpcrnn.cli")
    assert "OMP_NUM_THREADS" not in os.environ


def test_importing_the_kernels_loads_no_blas():
    import subprocess
    import sys
    code = ("import hpcrnn.kernels, hpcrnn.kernels.common as c, hpcrnn.model; assert not c._LOADED_BLAS; "
            "import numpy as np, hpcrnn; hpcrnn.Model(cell='rnn'); assert c._LOADED_BLAS")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
