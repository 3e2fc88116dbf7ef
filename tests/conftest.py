"""Shared test set-up: the tests/ folder on sys.path (for tests/helpers.py) and quiet non-zero MPI ranks."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # Under mpiexec every rank runs pytest; only rank 0 reports, unless a test fails on another rank.
    rank = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    if rank != 0:
        config.option.verbose = -2
