"""Validate once: checksums that any number of ranks compute alike, the stamp (written by synth, prepare and
`hpcrnn check --stamp`, trusted by open_dataset, ignored when the layout changed), and the check of each
batch as it is read for files without a stamp."""
import argparse

import h5py
import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data import checksum, commands, stamp
from hpcrnn.data.filecheck import check_file
from hpcrnn.data.loader import BatchLoader, iterate_in_order
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.errors import DataError

SELF = mpi.self_comm()


def rank_parts(rows, block_rows, size):
    """Each of `size` ranks' block digests of its rows, as the parallel scan makes them."""
    parts = []
    for rank in range(size):
        start, stop = checksum.rank_rows(len(rows), block_rows, size, rank)
        parts.append({"d": checksum.block_digests(rows[start:stop], block_rows)})
    return parts


def test_checksum_is_the_same_for_any_rank_count_and_any_write_pieces():
    rows = np.random.default_rng(0).standard_normal((1003, 5, 3)).astype(np.float32)
    sums = {checksum.merged(rank_parts(rows, 64, size))["d"] for size in (1, 2, 3, 7, 40)}
    hasher = checksum.RowHasher(64)
    for first, stop in [(0, 1), (1, 100), (100, 128), (128, 700), (700, 1003)]:
        hasher.add(rows[first:stop])
    assert sums == {hasher.checksum()}
    changed = rows.copy()
    changed[517, 2, 1] = np.nextafter(changed[517, 2, 1], np.float32(9))
    assert checksum.merged(rank_parts(changed, 64, 3))["d"] not in sums
    assert checksum.merged(rank_parts(rows, 65, 3))["d"] not in sums        # the block size is part of it


def test_rank_rows_are_whole_blocks_covering_everything_once():
    for size in (1, 2, 3, 5):
        ranges = [checksum.rank_rows(1003, 64, size, rank) for rank in range(size)]
        assert ranges[0][0] == 0 and ranges[-1][1] == 1003
        assert all(a[1] == b[0] and a[1] % 64 == 0 for a, b in zip(ranges, ranges[1:]))


def synth(path, **changes):
    spec = dict(kind="sines", sequences=300, length=8, features=3, out=str(path), seed=1, classes=0)
    return write(SynthSpec(**{**spec, **changes}), SELF)


def test_synth_stamps_and_open_trusts_the_stamp(tmp_path):
    path = synth(tmp_path / "c.h5", classes=4)
    with h5py.File(path, "r") as handle:
        found, note = stamp.read(handle)
        labels_max = int(handle["labels"][:].max())
    assert note == "" and found.checks == ("finite", "labels") and found.label_max == labels_max == 3
    assert set(found.digests) == {"inputs", "labels"} and "synth" in found.by
    with h5py.File(path, "a") as handle:        # the stamp, not the labels, gives the classes of a stamped file
        handle.attrs["hpcrnn_label_max"] = np.int64(6)
    info = open_dataset(path, SELF)
    assert info.checked and not info.check_finite and info.num_classes == 7


def test_a_stamp_whose_layout_changed_is_ignored(tmp_path):
    path = synth(tmp_path / "w.h5")
    with h5py.File(path, "a") as handle:
        for name in ("inputs", "targets"):
            data = handle[name][()]
            del handle[name]
            handle.create_dataset(name, data=np.concatenate([data, data[:1]]))
    info = open_dataset(path, SELF)
    assert not info.checked and info.check_finite and "changed shape or type" in info.stamp_note
    assert "[300, 8, 3]" in info.stamp_note and "[301, 8, 3]" in info.stamp_note


def test_a_half_written_stamp_is_no_stamp(tmp_path):
    path = synth(tmp_path / "w.h5")
    with h5py.File(path, "a") as handle:
        del handle.attrs[stamp.CHECKED]
    assert not open_dataset(path, SELF).checked


def check(argv):
    parser = commands.add_check_args(argparse.ArgumentParser())
    return commands.run_check(parser.parse_args(argv), SELF)


def test_check_verifies_the_synth_checksums_and_stamps_a_plain_file(tmp_path):
    assert "they match the stamp" in check([synth(tmp_path / "s.h5")])
    path = fixtures.write_windows(str(tmp_path / "w.h5"), output="labels", lengths=True)
    assert not open_dataset(path, SELF).checked
    summary = check([path, "--stamp"])
    assert summary.endswith("; stamped") and "(finite, lengths, labels)" in summary
    info = open_dataset(path, SELF)
    assert info.checked and info.num_classes == 3
    assert "they match the stamp" in check([path])


def test_check_names_the_data_set_whose_values_changed_after_the_stamp(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "w.h5"))
    check([path, "--stamp"])
    with h5py.File(path, "a") as handle:
        handle["targets"][17, 1] = 0.5
    with pytest.raises(DataError) as caught:
        check([path])
    message = str(caught.value)
    assert message.startswith(f"{path}: /targets checksum ") and "does not match the stamp's" in message
    with pytest.raises(DataError, match="/targets checksum"):
        check([path, "--stamp"])
    assert check([path, "--stamp", "--force"]).endswith("; stamped") and "match the stamp" in check([path])


@pytest.mark.parametrize("name", sorted(fixtures.BAD_VALUES))
def test_check_finds_each_bad_value_and_never_stamps(tmp_path, name):
    path = str(tmp_path / f"{name}.h5")
    fixtures.BAD_VALUES[name][0](path)
    with pytest.raises(DataError) as caught:
        check([path, "--stamp"])
    assert fixtures.BAD_VALUES[name][1] in str(caught.value) and path in str(caught.value)
    with h5py.File(path, "r") as handle:
        assert stamp.CHECKED not in handle.attrs


def test_prepare_stamps_what_it_wrote(tmp_path):
    source = tmp_path / "w.npz"
    rng = np.random.default_rng(2)
    np.savez(source, inputs=rng.standard_normal((90, 6, 2)), labels=rng.integers(0, 5, 90),
             lengths=rng.integers(1, 7, 90))
    out = str(tmp_path / "w.h5")
    commands.run_prepare(commands.add_prepare_args(argparse.ArgumentParser()).parse_args(
        ["--input", str(source), "--out", out]), SELF)
    info = open_dataset(out, SELF)
    assert info.checked and info.num_classes == 5
    assert "they match the stamp" in check_file(out, SELF)


def first_problems(info, batches):
    return [b.problem for b in batches if b.problem]


@pytest.mark.parametrize("name", sorted(fixtures.BAD_VALUES))
def test_each_batch_is_checked_as_it_is_read(tmp_path, name):
    path = str(tmp_path / f"{name}.h5")
    fixtures.BAD_VALUES[name][0](path)
    info = open_dataset(path, SELF)
    loader = BatchLoader(info, (0, info.num_samples), 8, SELF, seed=0, buffer_mb=0.001)
    try:
        problems = first_problems(info, loader.epoch(0))
    finally:
        loader.close()
    in_order = first_problems(info, iterate_in_order(info, (0, info.num_samples), 8, SELF))
    assert problems and in_order and all(fixtures.BAD_VALUES[name][1] in p for p in problems + in_order)
    assert all(p.startswith(path + ": ") for p in problems)
    trusting = open_dataset(path, SELF, check_finite=False)
    left = first_problems(trusting, iterate_in_order(trusting, (0, info.num_samples), 8, SELF))
    assert bool(left) == (name == "bad_lengths")          # check_finite = false: only the range checks


def test_checksums_of_another_algorithm_are_noted_not_compared(tmp_path):
    path = synth(tmp_path / "s.h5")
    with h5py.File(path, "a") as handle:
        handle.attrs["hpcrnn_checksum_algorithm"] = "md5 of everything"
        handle.attrs["hpcrnn_checksum_inputs"] = "0" * 64
    summary = check([path])
    assert "not comparable" in summary and "match the stamp" not in summary and open_dataset(path, SELF).checked
