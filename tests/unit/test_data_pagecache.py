"""Readahead of the rows a read group needs and cold reads simulated by dropping a small file's pages from the
page cache (posix_fadvise DONTNEED): no test needs a file larger than memory."""
import time

import h5py
import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data import pagecache
from hpcrnn.data.batch_reads import open_reader
from hpcrnn.data.loader import BatchLoader
from hpcrnn.data.schema import open_dataset


@pytest.fixture
def windows(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "w.h5"), count=4000, seq_len=16, features=8, chunk=64,
                                  output="labels", lengths=True)
    return open_dataset(path, mpi.self_comm())


def landed(path, begins, ends, timeout_s=10.0):
    """Whether every page of the byte ranges is cached, waiting for readahead to land (not a speed check)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(pagecache.cached_fraction(path, b, e) == 1.0 for b, e in zip(begins, ends)):
            return True
        time.sleep(0.01)
    return False


def test_drop_empties_the_cache_of_the_file(windows):
    with open(windows.path, "rb") as handle:
        handle.read()
    assert pagecache.cached_fraction(windows.path) == 1.0
    pagecache.drop(windows.path)
    assert pagecache.cached_fraction(windows.path) < 0.1


def test_byte_ranges_of_rows_split_at_chunks_and_whole_chunks_when_compressed(tmp_path):
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("plain", data=np.arange(400, dtype=np.float32).reshape(100, 4), chunks=(8, 4))
        handle.create_dataset("packed", data=np.zeros((100, 4), np.float32), chunks=(8, 4), compression="gzip")
    with h5py.File(path, "r") as handle:
        plain, packed = pagecache.RowBytes(handle["plain"]), pagecache.RowBytes(handle["packed"])
        begin, end = plain.byte_ranges([6, 40], [10, 41])
        assert (end - begin).tolist() == [32, 32, 16]                 # rows 6-7 | 8-9 | 40, 16 bytes a row
        assert begin[1] == plain.address[1] and begin[2] == plain.address[5]
        begin, end = packed.byte_ranges([6], [10])
        assert begin.tolist() == packed.address[:2].tolist() and (end - begin).tolist() == packed.size[:2].tolist()


def test_without_a_layout_chunks_are_looked_up_when_first_touched(tmp_path):
    """Startup independent of the file's size: a RowBytes without a layout knows no chunk until a row range
    touches it, and then gives the same byte ranges as one built from the whole chunk table."""
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("plain", data=np.arange(800, dtype=np.float32).reshape(200, 4), chunks=(8, 4))
        handle.create_dataset("sparse", shape=(64, 4), dtype=np.float32, chunks=(8, 4))
        handle["sparse"][16:24] = 1.0                                   # only chunk 2 is allocated
    with h5py.File(path, "r") as handle:
        lazy, full = pagecache.RowBytes(handle["plain"]), pagecache.RowBytes(handle["plain"],
                                                                             pagecache.chunk_layout(handle["plain"]))
        assert lazy.known is not None and not lazy.known.any()
        for starts, stops in (([6, 40], [10, 41]), ([190, 0, 99], [200, 3, 120])):
            for got, want in zip(lazy.byte_ranges(starts, stops), full.byte_ranges(starts, stops)):
                assert got.tolist() == want.tolist()
        assert np.flatnonzero(lazy.known).tolist() == [0, 1, 5, 12, 13, 14, 23, 24]
        sparse = pagecache.RowBytes(handle["sparse"])
        begin, end = sparse.byte_ranges([0], [64])                      # unallocated chunks are left out
        assert len(begin) == 1 and begin[0] == handle["sparse"].id.get_chunk_info_by_coord((16, 0)).byte_offset


@pytest.mark.parametrize("mode", ["direct", "independent"])
def test_ahead_reads_every_page_the_read_then_needs(windows, mode):
    reader = open_reader(windows, mpi.self_comm(), mode, np.float32)
    try:
        indices = np.random.default_rng(0).choice(2000, 300, replace=False)
        pagecache.drop(windows.path)
        reader.ahead(indices)
        starts, stops = reader.sieved(*reader.row_ranges(indices))
        begins, ends = [], []
        for layout in reader.readahead.layouts:                        # inputs, labels, lengths
            begin, end = layout.byte_ranges(starts, stops)
            begins += begin.tolist()
            ends += end.tolist()
        assert landed(windows.path, begins, ends)
        far = reader.readahead.layouts[0].byte_ranges([3000], [4000])       # rows no read needs: left alone
        assert pagecache.cached_fraction(windows.path, far[0][0], far[1][-1]) < 0.2
    finally:
        reader.close()


@pytest.mark.parametrize("mode", ["direct", "independent"])
def test_cold_epoch_gives_the_warm_epoch_batches(windows, mode):
    """Every group read from a dropped cache (each read follows a drop): the same batches as a warm epoch."""
    def epoch(cold):
        loader = BatchLoader(windows, (10, 3990), 96, comm=mpi.self_comm(), seed=5, buffer_mb=0.05, reads=mode)
        read = loader.reader.read

        def cold_read(indices):
            pagecache.drop(windows.path)
            return read(indices)
        if cold:
            loader.reader.read = cold_read
        try:
            return fixtures.kept(loader.epoch(1))
        finally:
            loader.close()
    warm, cold = epoch(False), epoch(True)
    assert len(cold) == len(warm) == 42
    for a, b in zip(warm, cold):
        assert np.array_equal(a.indices, b.indices) and np.array_equal(a.x, b.x)
        assert np.array_equal(a.y, b.y) and np.array_equal(a.lengths, b.lengths)
        assert np.array_equal(a.x[:, 0, 0], a.indices.astype(np.float32))
