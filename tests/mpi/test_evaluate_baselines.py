"""Evaluation under mpiexec (-n 2, -n 3): per-horizon RMSE, baselines, skill and the confusion matrix match one
rank on uneven splits (47 samples), every sum travels in one reduction, and every rank gets the same
result. Each rank also evaluates alone on COMM_SELF as the reference."""
import json
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn import checkpoint as ckpt
from hpcrnn.config import load_config, to_toml
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.evaluate import run_evaluate
from hpcrnn.model import Model
from helpers import shared_temp_folder

COMM = MPI.COMM_WORLD
N = 47


@pytest.fixture(scope="module")
def folder():
    yield from shared_temp_folder(COMM, "hpcrnn-eval-")


def save_checkpoint(path, input_size, output_size, loss):
    """An untrained float64 GRU (a model is a model for these sums), val_fraction 0.3 in its config."""
    model = Model(cell="gru", input_size=input_size, hidden_size=5, output_size=output_size, dtype=np.float64,
                  seed=1)
    meta = {"model": {**model.meta(), "loss": loss}, "step": 7,
            "config_toml": to_toml(load_config(None, ["data.val_fraction=0.3"]))}
    ckpt.save(path, ckpt.pack(model.state_dict(), {}), meta)


def write_series(path):
    """47 windows (stride 2, lookback 6, horizon 3) of a random 3-column series, targets columns 2 and 0."""
    series = np.random.default_rng(5).standard_normal((2 * (N - 1) + 9, 3)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        dset = handle.create_dataset("series", data=series, chunks=(16, 3))
        for name, value in (("lookback", 6), ("horizon", 3), ("stride", 2)):
            dset.attrs[name] = np.int64(value)
        dset.attrs["target_columns"] = np.array([2, 0], dtype=np.int64)


def write_labels(path):
    rng = np.random.default_rng(6)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        handle.create_dataset("inputs", data=rng.standard_normal((N, 5, 2)).astype(np.float32), chunks=(8, 5, 2))
        handle.create_dataset("labels", data=rng.integers(0, 4, N), chunks=(8,))


@pytest.fixture(scope="module")
def files(folder):
    paths = {kind: (os.path.join(folder, f"{kind}.h5"), os.path.join(folder, f"{kind}-ckpt.h5"))
             for kind in ("synth", "series", "labels")}
    if COMM.rank == 0:
        write(SynthSpec(kind="mackey-glass", sequences=N, length=10, features=2, horizon=3,
                        out=paths["synth"][0], seed=2), MPI.COMM_SELF)
        write_series(paths["series"][0])
        write_labels(paths["labels"][0])
        save_checkpoint(paths["synth"][1], 2, 3, "mse")
        save_checkpoint(paths["series"][1], 3, 6, "mse")
        save_checkpoint(paths["labels"][1], 2, 4, "cross_entropy")
    COMM.Barrier()
    return paths


@pytest.fixture
def reductions(monkeypatch):
    """Counts the calls of comm.allreduce_sum made by evaluation."""
    import hpcrnn.evaluate
    calls, original = [], hpcrnn.evaluate.mpi.allreduce_sum

    def counted(comm, buf, *args):
        calls.append(len(buf))
        return original(comm, buf, *args)
    monkeypatch.setattr(hpcrnn.evaluate.mpi, "allreduce_sum", counted)
    return calls


def assert_same(parallel, serial, path=""):
    """Counts, class indices and the confusion matrix exactly; floats to 1e-12 (other summation order)."""
    if isinstance(serial, dict):
        assert set(parallel) == set(serial), path
        for key in serial:
            assert_same(parallel[key], serial[key], f"{path}.{key}")
    elif isinstance(serial, list):
        assert len(parallel) == len(serial), path
        for i, (a, b) in enumerate(zip(parallel, serial)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(serial, float):
        assert parallel == pytest.approx(serial, rel=1e-12, abs=1e-15), path
    else:
        assert parallel == serial, path


@pytest.mark.parametrize("kind", ["synth", "series", "labels"])
@pytest.mark.parametrize("split", ["all", "val"])
def test_parallel_evaluation_matches_one_rank(files, kind, split, reductions):
    data, checkpoint = files[kind]
    parallel = run_evaluate(checkpoint, data, COMM, split=split, batch_size=5, season=2)
    assert len(reductions) == (1 if COMM.size > 1 else 0)         # every sum and count in one reduction
    serial = run_evaluate(checkpoint, data, MPI.COMM_SELF, split=split, batch_size=5, season=2)
    assert parallel["count"] == (N if split == "all" else int(N * 0.3))
    assert_same(parallel, serial)
    if kind == "labels":
        assert sum(map(sum, parallel["confusion_matrix"])) == parallel["count"]
        assert parallel["baselines"]["majority_class"]["accuracy"] > 0
    else:
        assert set(parallel["baselines"]) == {"persistence", "two_point_linear", "seasonal_naive"}
        assert all("rmse" in b for b in parallel["baselines"].values())
        assert len(parallel["per_horizon_rmse"]) == 3 and parallel["skill"] is not None
    everyone = COMM.allgather(json.dumps(parallel, sort_keys=True))
    assert all(text == everyone[0] for text in everyone)


def test_bad_which_and_season_are_errors_on_every_rank(files):
    from hpcrnn.errors import ConfigError
    data, checkpoint = files["synth"]
    with pytest.raises(ConfigError, match="--which best: applies to a run directory"):
        run_evaluate(checkpoint, data, COMM, which="best")
    with pytest.raises(ConfigError, match="--season: must be an integer >= 1"):
        run_evaluate(checkpoint, data, COMM, season=0)
    COMM.Barrier()
