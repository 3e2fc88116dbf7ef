"""Fixtures of the MPI tests (run under mpiexec; every rank runs every test)."""
import pytest
from mpi4py import MPI


@pytest.fixture
def shared_dir(tmp_path_factory):
    """A temporary folder made by rank 0, the same path on every rank."""
    path = str(tmp_path_factory.mktemp("shared")) if MPI.COMM_WORLD.rank == 0 else None
    return MPI.COMM_WORLD.bcast(path)
