"""Validate once, under mpiexec (any number of ranks): the checksums of synth and of `hpcrnn check` are those
of one rank, and a bad value found in one rank's batch stops training, evaluation and prediction on every rank
with the same one-line message naming the file and the sample."""
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import data_fixtures as fixtures
from hpcrnn.config import load_config
from hpcrnn.data import stamp
from hpcrnn.data.filecheck import check_file
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.errors import DataError
from hpcrnn.evaluate import evaluate_split
from hpcrnn.model import Model
from hpcrnn.run import train
from helpers import on_rank_zero, shared_temp_folder

COMM = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def folder():
    yield from shared_temp_folder(COMM, "hpcrnn-stamp-")


def stored_digests(path):
    with h5py.File(path, "r") as handle:
        return stamp.read(handle)[0].digests


@pytest.mark.parametrize("form", ["windows", "series"])
def test_parallel_checksums_equal_serial_ones(folder, monkeypatch, form):
    monkeypatch.setattr("hpcrnn.data.checksum.BLOCK_BYTES", 700)      # many blocks: every rank hashes some
    monkeypatch.setattr("hpcrnn.data.synth.SLAB_BYTES", 20000)
    spec = dict(kind="mackey-glass", sequences=37, length=24, features=2, seed=5, horizon=2, form=form)
    parallel, serial = (os.path.join(folder, f"{name}_{form}.h5") for name in ("p", "s"))
    write(SynthSpec(out=parallel, **spec), comm=COMM)
    on_rank_zero(COMM, write, SynthSpec(out=serial, **spec), MPI.COMM_SELF)
    digests = stored_digests(parallel)
    assert digests == stored_digests(serial) and len(digests) == (1 if form == "series" else 2)
    summary = check_file(parallel, COMM)
    assert "they match the stamp" in summary and all(d in summary for d in digests.values())
    plain = os.path.join(folder, f"plain_{form}.h5")        # unstamped: check computes its own digests
    on_rank_zero(COMM, _copy_datasets, serial, plain)
    sums = check_file(plain, COMM).split("; checksums ")[1]
    serial_sums = on_rank_zero(COMM, lambda: check_file(plain, MPI.COMM_SELF).split("; checksums ")[1])
    assert COMM.rank != 0 or (sums == serial_sums and "note" not in sums)


def _copy_datasets(source, target):
    with h5py.File(source, "r") as a, h5py.File(target, "w") as b:
        for key, value in a.attrs.items():
            if not key.startswith("hpcrnn_check"):
                b.attrs[key] = value
        for name in a:
            a.copy(name, b)


def agreed_error(function):
    with pytest.raises(DataError) as caught:
        function()
    messages = COMM.allgather(str(caught.value))
    assert len(set(messages)) == 1
    return messages[0]


@pytest.mark.mpi_timeout(120)
def test_a_nan_stops_training_on_every_rank_naming_file_and_sample(folder):
    path = os.path.join(folder, "nan.h5")
    on_rank_zero(COMM, fixtures.BAD_VALUES["nan_inputs"][0], path)
    config = load_config(None, [f"data.path={path}", f"run_dir={os.path.join(folder, 'run')}", "model.hidden_size=4",
                                "train.batch_size=6", "train.epochs=1", "train.progress=none",
                                "data.val_fraction=0", "data.buffer_mb=0.001"])
    message = agreed_error(lambda: train(config, COMM))
    assert message == f"{path}: /inputs contains NaN or Inf at sample 37"


@pytest.mark.parametrize("name", ["inf_targets", "nan_series"])
def test_a_bad_value_stops_evaluation_on_every_rank(folder, name):
    path = os.path.join(folder, f"{name}.h5")
    on_rank_zero(COMM, fixtures.BAD_VALUES[name][0], path)
    info = open_dataset(path, COMM)
    model = Model(cell="gru", input_size=info.num_features, hidden_size=3, num_layers=1,
                  output_size=info.output_size, dtype=np.float32)
    message = agreed_error(lambda: evaluate_split(model, info, (0, info.num_samples), "mse", COMM, 5))
    assert message.startswith(path + ": ") and fixtures.BAD_VALUES[name][1] in message
