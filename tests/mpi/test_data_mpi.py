"""The data pipeline under mpiexec (any number of ranks): agreement on bad files, collective reads, every
sample once per epoch, an epoch order independent of the number of ranks, tiny data, parallel synth."""

import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import data_fixtures as fixtures
from hpcrnn.data.loader import BatchLoader, iterate_in_order
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.errors import DataError
from helpers import digest, on_rank_zero, shared_temp_folder

COMM = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def folder():
    yield from shared_temp_folder(COMM, "hpcrnn-data-")


@pytest.fixture(scope="module")
def windows(folder):
    path = os.path.join(folder, "w.h5")
    on_rank_zero(COMM, fixtures.write_windows, path, count=61, chunk=8, output="labels", lengths=True)
    return open_dataset(path, comm=COMM)


@pytest.mark.parametrize("name", ["truncated", "no_schema", "length_mismatch", "negative_label"])
def test_every_rank_raises_the_same_error(folder, name):
    path = os.path.join(folder, f"{name}.h5")
    on_rank_zero(COMM, fixtures.BAD_FILES[name][0], path)
    with pytest.raises(DataError) as caught:
        open_dataset(path, comm=COMM)
    messages = COMM.allgather(str(caught.value))
    assert len(set(messages)) == 1 and fixtures.BAD_FILES[name][1] in messages[0]


def test_labels_agree_over_ranks(windows):
    assert windows.num_classes == 3 and windows.has_lengths


def gathered_epoch(info, split, batch_size, comm, **options):
    loader = BatchLoader(info, split, batch_size, comm=comm, seed=3, buffer_mb=0.001, **options)
    try:
        steps = loader.steps_per_epoch
        batches = fixtures.kept(loader.epoch(1))
        return loader, steps, batches
    finally:
        loader.close()


@pytest.mark.parametrize("prefetch,reads", [(True, "collective"), (False, "collective"), (True, "direct"),
                                            (False, "direct"), (True, "independent"), (True, "two-phase"),
                                            (False, "two-phase")])
def test_epoch_covers_every_sample_once_in_the_serial_order(windows, prefetch, reads):
    split = (4, 58)
    loader, steps, mine = gathered_epoch(windows, split, 10, COMM, prefetch=prefetch, reads=reads)
    parallel = h5py.get_config().mpi and COMM.size > 1
    assert loader.reads == ("independent" if reads == "collective" and not parallel else reads)
    _, serial_steps, serial = gathered_epoch(windows, split, 10, MPI.COMM_SELF)
    assert steps == serial_steps == len(mine) == 6
    for batch, reference in zip(mine, serial):
        parts = COMM.allgather(batch.indices)
        assert np.array_equal(np.concatenate(parts), reference.indices)
        assert batch.global_count == len(reference.indices)
        assert np.array_equal(batch.x[:, 0, 0], batch.indices.astype(np.float32))
        assert np.array_equal(batch.y, batch.indices % 3) and np.array_equal(batch.lengths, 1 + batch.indices % 4)
    everything = np.concatenate(COMM.allgather(np.concatenate([b.indices for b in mine])))
    assert sorted(everything.tolist()) == list(range(*split))


@pytest.mark.parametrize("reads", ["collective", "direct", "two-phase"])
def test_series_windows_under_collective_and_direct_reads(folder, reads):
    path = os.path.join(folder, f"s-{reads}.h5")
    on_rank_zero(COMM, fixtures.write_series, path, rows=150, lookback=6, horizon=3, stride=2, chunk=8)
    info = open_dataset(path, comm=COMM)
    loader, _, mine = gathered_epoch(info, (0, info.num_samples), 7, COMM, reads=reads)
    assert reads == "collective" or loader.reads == reads
    for batch in mine:
        starts = batch.indices * 2
        assert np.array_equal(batch.x[:, :, 0], starts[:, None] + np.arange(6))
        assert np.allclose(batch.y, starts[:, None] + 6 + np.arange(3) + 0.001)
    total = COMM.allreduce(sum(len(b.x) for b in mine))
    assert total == info.num_samples


@pytest.mark.parametrize("reads", ["collective", "two-phase"])
def test_tiny_split_and_batch_larger_than_data(windows, reads):
    _, steps, mine = gathered_epoch(windows, (20, 22), 8, COMM, reads=reads)
    assert steps == 1 and len(mine) == 1 and mine[0].global_count == 2
    assert COMM.allreduce(len(mine[0].x)) == 2 and mine[0].x.shape[1:] == (4, 3)


@pytest.mark.parametrize("reads", ["collective", "two-phase"])
def test_leaving_an_epoch_early_does_not_hang(windows, reads):
    loader = BatchLoader(windows, (0, 61), 4, comm=COMM, seed=0, buffer_mb=0.0005, reads=reads)
    for step, _ in enumerate(loader.epoch(0)):
        if step == 3:
            break
    assert sum(1 for _ in loader.epoch(1, start_step=10)) == loader.steps_per_epoch - 10
    loader.close()


@pytest.mark.parametrize("reads", ["collective", "direct", "two-phase"])
def test_in_order_iteration_blocks(windows, reads):
    batches = fixtures.kept(iterate_in_order(windows, (5, 50), 4, comm=COMM, reads=reads))
    assert len(set(COMM.allgather(len(batches)))) == 1
    mine = np.concatenate([b.indices for b in batches])
    assert np.array_equal(np.concatenate(COMM.allgather(mine)), np.arange(5, 50))
    assert all(np.array_equal(b.x[:, 0, 0], b.indices.astype(np.float32)) for b in batches)


@pytest.mark.parametrize("form", ["windows", "series"])
def test_synth_same_bytes_for_any_number_of_ranks(folder, monkeypatch, form):
    monkeypatch.setattr("hpcrnn.data.synth.SLAB_BYTES", 20000)     # several collective slabs per rank
    spec = dict(kind="mackey-glass", sequences=13, length=24, features=2, seed=5, horizon=2, form=form)
    write(SynthSpec(out=os.path.join(folder, f"p_{form}.h5"), **spec), comm=COMM)
    on_rank_zero(COMM, write, SynthSpec(out=os.path.join(folder, f"s_{form}.h5"), **spec), MPI.COMM_SELF)
    if COMM.rank == 0:
        assert digest(os.path.join(folder, f"p_{form}.h5")) == digest(os.path.join(folder, f"s_{form}.h5"))
    assert open_dataset(os.path.join(folder, f"p_{form}.h5"), comm=COMM).form == form
