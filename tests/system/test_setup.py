"""jobs/setup.sh on a cluster login node without root: it looks for the module environment's MPI and parallel
HDF5 and stops with a message that says what is missing and how to fix it (run here as user 'nobody')."""
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from helpers import ROOT


@pytest.fixture
def home():
    """A folder the user 'nobody' can read (pytest's tmp_path sits under a root-only folder)."""
    path = tempfile.mkdtemp(prefix="hpcrnn-setup-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def run_setup_as_nobody(home, tools):
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root to run setup as an unprivileged user")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    for name, target in {"dirname": "dirname", "id": "id", **tools}.items():
        os.symlink(shutil.which(target), bin_dir / name)
    env = {"PATH": str(bin_dir), "HOME": str(home), "HPCRNN_VENV": str(home / "venv")}
    return subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", shutil.which("bash"), "jobs/setup.sh"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_no_mpi_wrapper(home):
    result = run_setup_as_nobody(home, {})
    assert result.returncode != 0
    assert "no MPI compiler wrapper (mpicc) on PATH" in result.stderr
    assert "module load" in result.stderr and "command not found" not in result.stderr


def test_no_parallel_hdf5(home):
    result = run_setup_as_nobody(home, {"mpicc": "mpicc.mpich", "mpiexec": "mpiexec.mpich"})
    assert result.returncode != 0
    assert "no parallel HDF5 found (h5pcc or HDF5_DIR)" in result.stderr
    assert "MPI compiler" not in result.stderr and not (home / "venv").exists()
