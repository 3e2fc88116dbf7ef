"""`synth` and `prepare` as commands under mpiexec: they finish, and a bad file ends every rank with a
one-line error and a non-zero exit status promptly instead of a hang."""
import shutil
import subprocess
import sys

import h5py
import pytest

import data_fixtures as fixtures
from helpers import mpiexec

MPIEXEC = shutil.which(mpiexec())      # the launcher setup recorded (make test requires it: tests/conftest.py)
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no MPI launcher installed")
OPEN = "import sys; from mpi4py import MPI; from hpcrnn.data.schema import open_dataset; " \
       "print(f'<{open_dataset(sys.argv[1], comm=MPI.COMM_WORLD).num_samples}>', flush=True)"

LEFT_OPEN = """
import sys
from hpcrnn import comm as mpi
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.schema import open_dataset
comm = mpi.world()
info = open_dataset(sys.argv[1], comm)
loader = BatchLoader(info, (0, info.num_samples), 8, comm, buffer_mb=0.001, reads="collective", prefetch=False)
print(f"<{loader.reads} {len(next(loader.epoch(0)).x)}>", flush=True)
"""   # the loader is never closed


def launch(ranks, *arguments, timeout=90):
    command = [MPIEXEC, "-n", str(ranks), sys.executable] + list(arguments)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_parallel_synth_command_writes_a_valid_file(tmp_path):
    out = str(tmp_path / "mg.h5")
    result = launch(2, "-m", "hpcrnn.data.commands", "synth", "--kind", "mackey-glass", "--sequences", "6",
                    "--length", "30", "--features", "2", "--out", out, "--horizon", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote") == 1                        # rank 0 prints the summary
    result = launch(2, "-c", OPEN, out)
    assert result.returncode == 0 and result.stdout.count("<6>") == 2


@pytest.mark.parametrize("name", ["negative_label", "truncated"])
def test_bad_file_stops_every_rank_promptly(tmp_path, name):
    path = str(tmp_path / f"{name}.h5")
    fixtures.BAD_FILES[name][0](path)
    result = launch(2, "-c", OPEN, path, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count(fixtures.BAD_FILES[name][1]) == 2     # both ranks raised the same error


def test_prepare_error_is_one_line_and_non_zero(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n")
    result = launch(2, "-m", "hpcrnn.data.commands", "prepare", "--input", str(bad), "--out",
                    str(tmp_path / "o.h5"), "--lookback", "1", timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and all("bad.csv: unparsable value" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_prepare_refuses_nonfinite_with_exit_2_or_drops_it(tmp_path):
    csv = tmp_path / "nan.csv"
    csv.write_text("a,b\n" + "".join(f"{i},{'nan' if i == 7 else i}\n" for i in range(20)))
    out = str(tmp_path / "o.h5")
    result = launch(2, "-m", "hpcrnn", "prepare", "--input", str(csv), "--out", out, "--lookback", "2", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{csv}: line 9, column 'b': non-finite value nan" in lines[0], result.stderr
    result = launch(2, "-m", "hpcrnn", "prepare", "--input", str(csv), "--out", out, "--lookback", "2",
                    "--drop-nonfinite", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("; dropped 1 row holding NaN/Inf") == 1


@pytest.mark.skipif(not h5py.get_config().mpi, reason="h5py without MPI has no collective reads")
def test_collective_reader_left_open_is_closed_before_mpi_finalize(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "w.h5"), count=61, chunk=8)
    result = launch(2, "-c", LEFT_OPEN, path, timeout=60)
    assert result.returncode == 0 and result.stdout.count("<collective 4>") == 2, result.stderr
    assert "after finalizing" not in result.stderr and "Traceback" not in result.stderr
