"""Direct reads through a memory map (hpcrnn.data.mapped) against h5py, which files allow them, and the
choice of read mode."""
import errno
import mmap
import os

import h5py
import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data import mapped
from hpcrnn.data import parallel
from hpcrnn.data import read_mode as read_mode_module
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.mapped import MappedDataset, MappedFile, why_not_mappable, why_not_mapped
from hpcrnn.data.read_mode import file_system, prefetch_allowed, read_mode
from hpcrnn.data.schema import open_dataset
from hpcrnn.errors import DataError

SELF = mpi.self_comm()


@pytest.fixture
def h5(tmp_path):
    """A file with datasets of every layout the reader meets, and its MappedFile."""
    path = str(tmp_path / "m.h5")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("chunked", data=rng.standard_normal((103, 5, 3), dtype=np.float32), chunks=(8, 5, 3))
        handle.create_dataset("contiguous", data=rng.standard_normal((40, 6)))
        handle.create_dataset("labels", data=np.arange(103, dtype=np.int64), chunks=(16,))
        handle.create_dataset("gzip", data=np.ones((20, 4), np.float32), chunks=(5, 4), compression="gzip")
        handle.create_dataset("tiles", data=np.ones((20, 4), np.float32), chunks=(5, 2))
        handle.create_dataset("big_endian", data=np.ones((20, 4), ">f4"), chunks=(5, 4))
    handle = h5py.File(path, "r")
    mapping = MappedFile(path)
    yield handle, mapping
    mapping.close()
    handle.close()


def test_which_datasets_can_be_mapped(h5):
    handle, _ = h5
    assert why_not_mappable(handle["chunked"]) is None and why_not_mappable(handle["contiguous"]) is None
    assert why_not_mappable(handle["gzip"]) == "filtered (compressed) chunks"
    assert why_not_mappable(handle["tiles"]) == "chunked along more than the first axis"
    assert "not a native number" in why_not_mappable(handle["big_endian"])


@pytest.mark.parametrize("name", ["chunked", "contiguous", "labels"])
def test_gathered_rows_equal_h5py_in_the_order_asked(h5, name):
    handle, mapping = h5
    dset = handle[name]
    rows = np.random.default_rng(1).permutation(dset.shape[0])[:30]
    got = MappedDataset(mapping, dset).gather(rows)
    assert got.dtype == dset.dtype and np.array_equal(got, dset[...][rows])


def test_runs_of_rows_cross_chunk_boundaries(h5):
    handle, mapping = h5
    data = handle["chunked"][...]
    starts = np.array([0, 5, 7, 90, 94])              # runs of 9 rows over chunks of 8
    got = MappedDataset(mapping, handle["chunked"]).gather(starts, 9)
    assert got.shape == (5, 9, 5, 3)
    assert all(np.array_equal(got[i], data[s:s + 9]) for i, s in enumerate(starts))
    assert MappedDataset(mapping, handle["chunked"]).gather(starts, 1).shape == (5, 1, 5, 3)


def test_rows_outside_the_dataset_are_refused(h5):
    handle, mapping = h5
    rows = MappedDataset(mapping, handle["chunked"])
    with pytest.raises(IndexError):
        rows.gather(np.array([103]))
    with pytest.raises(IndexError):
        rows.gather(np.array([100]), 4)


def test_byte_ranges_split_at_chunks(h5):
    handle, mapping = h5
    rows = MappedDataset(mapping, handle["chunked"])
    begin, end = rows.byte_ranges(np.array([6, 20]), np.array([10, 21]))
    row = 5 * 3 * 4
    assert (end - begin).tolist() == [2 * row, 2 * row, row]
    assert begin[0] == rows.address[0] + 6 * row and begin[1] == rows.address[1]


def test_file_cut_short_after_opening_is_not_mapped(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "t.h5"), count=64, chunk=8)
    handle = h5py.File(path, "r")
    try:
        inputs = handle["inputs"]
        last = inputs.id.get_chunk_info_by_coord((56, 0, 0))
        os.truncate(path, last.byte_offset + last.size // 2)        # e.g. overwritten by another job
        mapping = MappedFile(path)
        with pytest.raises(ValueError, match="beyond the end of the file"):
            MappedDataset(mapping, inputs)
        mapping.close()
        assert why_not_mapped(path, ["inputs"]) == "/inputs: chunks beyond the end of the file (truncated)"
    finally:
        handle.close()


def test_populate_falls_back_to_willneed_on_old_kernels(h5, monkeypatch):
    handle, mapping = h5
    calls = []

    def fake(address, length, advice):
        calls.append(advice)
        return -1 if advice == mapped.POPULATE else 0
    monkeypatch.setattr(mapped, "_madvise", fake)
    monkeypatch.setattr(mapped.ctypes, "get_errno", lambda: errno.EINVAL)
    monkeypatch.setattr(mapped, "_POPULATE_WORKS", True)
    rows = MappedDataset(mapping, handle["chunked"])
    rows.advise(np.array([0]), np.array([8]), mapped.POPULATE)
    rows.advise(np.array([40]), np.array([48]), mapped.POPULATE)
    assert calls == [mapped.POPULATE, mmap.MADV_WILLNEED, mmap.MADV_WILLNEED]      # asked once, then remembered
    assert mapped._POPULATE_WORKS is False


def test_compressed_file_falls_back_to_hdf5_reads_with_the_same_batches(tmp_path):
    plain = open_dataset(fixtures.write_windows(str(tmp_path / "p.h5"), count=60, output="labels", lengths=True), SELF)
    packed_path = str(tmp_path / "z.h5")
    with h5py.File(plain.path, "r") as source, h5py.File(packed_path, "w") as target:
        target.attrs["hpcrnn_schema"] = np.int64(1)
        for name in ("inputs", "labels", "lengths"):
            target.create_dataset(name, data=source[name][...], chunks=source[name].chunks, compression="gzip")
    packed = open_dataset(packed_path, SELF)
    assert why_not_mapped(packed_path, ["inputs"]) == "/inputs: filtered (compressed) chunks"
    batches = {}
    for info in (plain, packed):
        loader = BatchLoader(info, (0, 60), 7, SELF, seed=2, buffer_mb=0.001, reads="direct")
        batches[info.path] = (loader.reads, fixtures.kept(loader.epoch(3)))
        loader.close()
    (mode_a, a), (mode_b, b) = batches[plain.path], batches[packed_path]
    assert (mode_a, mode_b) == ("direct", "independent") and len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.indices, y.indices) and np.array_equal(x.x, y.x)
        assert np.array_equal(x.y, y.y) and np.array_equal(x.lengths, y.lengths)


def test_float64_models_get_float64_batches(tmp_path):
    info = open_dataset(fixtures.write_windows(str(tmp_path / "w.h5"), count=30), SELF)
    loader = BatchLoader(info, (0, 30), 8, SELF, seed=0, buffer_mb=0.001, reads="direct", dtype=np.float64)
    batch = next(iter(loader.epoch(0)))
    assert loader.reads == "direct" and batch.x.dtype == np.float64 and batch.y.dtype == np.float64
    assert np.array_equal(batch.x[:, 0, 0], batch.indices.astype(np.float64))
    loader.close()


class TwoRanks:
    size, rank = 2, 0


def test_read_mode_is_decided_once_before_reading(tmp_path, monkeypatch):
    info = open_dataset(fixtures.write_windows(str(tmp_path / "x.h5")), SELF)
    assert file_system(str(tmp_path)) != ""
    assert read_mode(SELF, "auto", info) == "direct"
    assert read_mode(SELF, "collective", info) == "independent"                 # one rank
    monkeypatch.setattr(read_mode_module, "file_system", lambda _: "lustre")
    assert read_mode(SELF, "auto", info) == "direct"                           # no mpio with one rank
    monkeypatch.setattr(parallel, "mpio_available", lambda _: True)
    assert read_mode(TwoRanks(), "auto", info) == "collective"
    monkeypatch.setattr(mpi, "thread_multiple", lambda: False)
    assert not prefetch_allowed("collective", True) and prefetch_allowed("direct", True)
    with pytest.raises(DataError, match="data.reads must be one of"):
        read_mode(SELF, "mmap", info)


def test_a_closed_map_is_never_advised(h5, monkeypatch):
    handle, mapping = h5
    rows = MappedDataset(mapping, handle["chunked"])
    calls = []
    monkeypatch.setattr(mapped, "_madvise", lambda *args: calls.append(args) or 0)
    mapping.close()
    rows.advise(np.array([0]), np.array([8]), mmap.MADV_DONTNEED)
    assert calls == []


def test_auto_reads_files_of_many_chunks_independently(tmp_path, monkeypatch):
    """The chunk table direct reads need costs ~n^2 in HDF5 1.10: above DIRECT_MAX_CHUNKS `auto` reads
    independently, so startup does not grow with the file; `direct` asked for explicitly still maps."""
    path = fixtures.write_windows(str(tmp_path / "x.h5"))
    info = open_dataset(path, SELF)
    chunks = read_mode_module.chunk_count(path, read_mode_module.datasets_read(info))
    with h5py.File(path, "r") as handle:
        expected = sum(-(-handle[n].shape[0] // handle[n].chunks[0]) if handle[n].chunks else 1
                       for n in read_mode_module.datasets_read(info))
    assert chunks == expected >= 2
    monkeypatch.setattr(read_mode_module, "DIRECT_MAX_CHUNKS", chunks)
    assert read_mode(SELF, "auto", info) == "direct"
    monkeypatch.setattr(read_mode_module, "DIRECT_MAX_CHUNKS", chunks - 1)
    assert read_mode(SELF, "auto", info) == "independent"
    assert read_mode(SELF, "direct", info) == "direct"
    assert read_mode_module.chunk_count(str(tmp_path / "missing.h5"), ["inputs"]) == 0
