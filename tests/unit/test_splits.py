"""hpcrnn.data.splits: the Split index set, the random and stratified selections (determinism, disjointness,
coverage, fractions, per-class balance, bad input), the config's choice of splits and val/test files."""
import h5py
import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn.comm import self_comm
from hpcrnn.config import load_config
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.shard import epoch_order
from hpcrnn.data.splits import (Split, as_split, choose_splits, file_splits, from_indices, random_split,
                                single_class_warning, stratified_counts, stratified_split)
from hpcrnn.errors import ConfigError, DataError

SELF = self_comm()


def covers_disjointly(parts, n):
    """train and val hold every sample of [0, n) exactly once."""
    both = np.concatenate([parts["train"].array(), parts["val"].array()])
    return len(both) == n and np.array_equal(np.sort(both), np.arange(n))


# ---- Split ------------------------------------------------------------------------------------------------
def test_from_indices_keeps_contiguous_samples_a_range():
    assert from_indices([5, 3, 4]).indices is None and from_indices([5, 3, 4]) == Split(3, 6)
    gappy = from_indices([9, 2, 4])
    assert gappy.indices.tolist() == [2, 4, 9] and (gappy.start, gappy.stop, len(gappy)) == (2, 10, 3)
    assert len(from_indices([])) == 0
    with pytest.raises(ValueError, match="distinct"):
        from_indices([3, 1, 3])


def test_take_maps_positions_to_samples():
    assert Split(10, 20).take([0, 3, 9]).tolist() == [10, 13, 19]
    assert from_indices([1, 7, 8, 30]).take([3, 0]).tolist() == [30, 1]
    assert as_split((4, 2)) == Split(4, 4) and len(as_split((4, 2))) == 0


def test_block_bounds_of_an_index_set_follow_the_chunks():
    assert Split(5, 30).block_bounds(8).tolist() == [0, 3, 11, 19, 25]
    assert from_indices([1, 2, 9, 10, 17, 40]).block_bounds(8).tolist() == [0, 2, 4, 5, 6]


def test_epoch_order_of_an_index_set_is_its_permutation_and_a_range_as_a_set_orders_alike():
    chosen = from_indices(np.arange(0, 200, 3))
    order = epoch_order(chosen, seed=2, epoch=1, block_size=16, window_samples=40, batch=8)
    assert np.array_equal(np.sort(order), chosen.array()) and not np.array_equal(order, chosen.array())
    as_set = Split(7, 90, np.arange(7, 90))
    assert np.array_equal(epoch_order(as_set, 1, 0, 8, 24, batch=5), epoch_order((7, 90), 1, 0, 8, 24, batch=5))


# ---- random -------------------------------------------------------------------------------------------------
def test_random_split_is_deterministic_disjoint_covering_and_sized():
    parts = random_split(1000, 0.25, seed=3)
    assert covers_disjointly(parts, 1000) and len(parts["val"]) == 250
    again = random_split(1000, 0.25, seed=3)
    assert parts["val"] == again["val"] and parts["train"] == again["train"]
    assert not parts["val"] == random_split(1000, 0.25, seed=4)["val"]
    assert parts["val"].array().max() > 900 and parts["val"].array().min() < 100    # drawn from everywhere


def test_random_split_without_val_is_the_whole_range():
    parts = random_split(37, 0.0, seed=1)
    assert parts["train"] == Split(0, 37) and parts["train"].indices is None and len(parts["val"]) == 0
    assert len(random_split(9, 0.1, seed=0)["val"]) == 0       # floor(0.9) = 0, like chronological


@pytest.mark.parametrize("args", [(10, 1.0, 0), (10, -0.1, 0), (-1, 0.5, 0)])
def test_random_split_refuses_bad_input(args):
    with pytest.raises(ValueError):
        random_split(*args)


# ---- stratified ---------------------------------------------------------------------------------------------
def test_stratified_counts_round_and_keep_every_class_in_both_splits():
    assert stratified_counts([100, 10, 3, 2, 1], 0.1).tolist() == [10, 1, 1, 1, 0]
    assert stratified_counts([4, 2], 0.9).tolist() == [3, 1]         # at most size - 1: train keeps one
    assert stratified_counts([50, 7], 0.0).tolist() == [0, 0]


def test_stratified_split_takes_the_fraction_of_every_class():
    labels = np.repeat([0, 1, 2, 3], [600, 300, 90, 10])
    np.random.default_rng(0).shuffle(labels)
    parts = stratified_split(labels, 0.2, seed=5)
    assert covers_disjointly(parts, len(labels))
    val, train = labels[parts["val"].array()], labels[parts["train"].array()]
    assert np.bincount(val, minlength=4).tolist() == [120, 60, 18, 2]
    assert np.bincount(train, minlength=4).tolist() == [480, 240, 72, 8]
    assert parts["val"] == stratified_split(labels, 0.2, seed=5)["val"]
    assert not parts["val"] == stratified_split(labels, 0.2, seed=6)["val"]


def test_stratified_split_of_a_class_sorted_file_holds_every_class():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    val = labels[stratified_split(labels, 0.1, seed=0)["val"].array()]
    assert np.bincount(val).tolist() == [5, 3, 2]


@pytest.mark.parametrize("labels", [np.zeros((3, 2), dtype=np.int64), np.array([0.5, 1.0])])
def test_stratified_split_refuses_labels_that_are_not_classes(labels):
    with pytest.raises(ValueError, match="labels"):
        stratified_split(labels, 0.2, seed=0)


# ---- the config's splits ------------------------------------------------------------------------------------
def data_config(path, *sets):
    return load_config(None, [f"data.path={path}", *sets]).data


@pytest.fixture
def labelled(tmp_path):
    """60 samples sorted by class: 30 of class 0, 20 of class 1, 10 of class 2."""
    path = fixtures.write_windows(str(tmp_path / "l.h5"), count=60, output="labels")
    with h5py.File(path, "r+") as handle:
        handle["labels"][...] = np.repeat([0, 1, 2], [30, 20, 10])
    return open_dataset(path, comm=SELF)


def test_config_split_choices(labelled):
    chrono = file_splits(labelled, data_config(labelled.path, "data.val_fraction=0.1"), SELF)
    assert chrono["val"] == Split(54, 60) and chrono["train"] == Split(0, 54)
    rand = file_splits(labelled, data_config(labelled.path, "data.split='random'", "data.seed=4"), SELF)
    assert rand["val"] == random_split(60, 0.1, 4)["val"] and rand["val"].indices is not None
    strat = file_splits(labelled, data_config(labelled.path, "data.split='stratified'"), SELF)
    assert np.bincount(np.repeat([0, 1, 2], [30, 20, 10])[strat["val"].array()]).tolist() == [3, 2, 1]


def test_single_class_warning_only_for_a_one_class_val_split(labelled):
    chrono = file_splits(labelled, data_config(labelled.path), SELF)
    message = single_class_warning(chrono["val"], labelled, SELF)
    assert "only class 2" in message and "stratified" in message and "\n" not in message
    strat = file_splits(labelled, data_config(labelled.path, "data.split='stratified'"), SELF)
    assert single_class_warning(strat["val"], labelled, SELF) is None
    assert single_class_warning(from_indices([0, 59]), labelled, SELF) is None


def test_split_attributes_win_over_data_split(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "a.h5"), count=50)
    with h5py.File(path, "r+") as handle:
        handle.attrs["split_train"], handle.attrs["split_val"] = [0, 30], [35, 50]
    info = open_dataset(path, comm=SELF)
    parts = file_splits(info, data_config(path, "data.split='random'"), SELF)
    assert parts == {"train": Split(0, 30), "val": Split(35, 50)}


def test_random_on_series_and_stratified_on_targets_are_refused(tmp_path):
    series = open_dataset(fixtures.write_series(str(tmp_path / "s.h5")), comm=SELF)
    with pytest.raises(ConfigError, match="data.split: random .*series form.*overlap"):
        file_splits(series, data_config(series.path, "data.split='random'"), SELF)
    targets = open_dataset(fixtures.write_windows(str(tmp_path / "t.h5")), comm=SELF)
    with pytest.raises(ConfigError, match="data.split: stratified needs class labels"):
        file_splits(targets, data_config(targets.path, "data.split='stratified'"), SELF)


def test_random_split_of_tiny_files_keeps_a_train_sample(tmp_path):
    info = open_dataset(fixtures.write_windows(str(tmp_path / "one.h5"), count=1), comm=SELF)
    assert len(file_splits(info, data_config(info.path, "data.split='random'", "data.val_fraction=0.5"),
                           SELF)["val"]) == 0
    info = open_dataset(fixtures.write_windows(str(tmp_path / "two.h5"), count=2), comm=SELF)
    parts = file_splits(info, data_config(info.path, "data.split='random'", "data.val_fraction=0.5"), SELF)
    assert len(parts["val"]) == 1 and len(parts["train"]) == 1


@pytest.mark.parametrize("sets, match", [
    (["data.split='shuffled'"], "data.split: unknown split 'shuffled'"),
    (["data.split='random'", "data.gap=3"], "data.gap: applies to chronological splits only"),
    (["data.seed=-1"], "data.seed: must be >= 0")])
def test_config_refuses_bad_split_settings(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["data.path=x.h5", *sets])


def test_val_and_test_files_take_the_whole_file_and_leave_train_whole(tmp_path):
    train = open_dataset(fixtures.write_windows(str(tmp_path / "train.h5"), count=40), comm=SELF)
    val = fixtures.write_windows(str(tmp_path / "val.h5"), count=12)
    test = fixtures.write_windows(str(tmp_path / "test.h5"), count=7)
    data = data_config(train.path, f"data.val_path='{val}'", f"data.test_path='{test}'", "data.val_fraction=0.5")
    splits, infos = choose_splits(data, train, SELF)
    assert splits == {"train": Split(0, 40), "val": Split(0, 12), "test": Split(0, 7)}
    assert (infos["train"].path, infos["val"].path, infos["test"].path) == (train.path, val, test)


@pytest.mark.parametrize("write, field", [
    (lambda p: fixtures.write_windows(p, count=10, features=4), "feature count 4 vs 3"),
    (lambda p: fixtures.write_windows(p, count=10, seq_len=6), "sequence length 6 vs 4"),
    (lambda p: fixtures.write_windows(p, count=10, output="labels"), "task classification vs regression"),
    (lambda p: fixtures.write_series(p, features=3), "form series vs windows")])
def test_a_val_file_of_another_schema_is_refused_naming_both_files(tmp_path, write, field):
    train = open_dataset(fixtures.write_windows(str(tmp_path / "train.h5"), count=40), comm=SELF)
    other = str(tmp_path / "other.h5")
    write(other)
    with pytest.raises(DataError) as error:
        choose_splits(data_config(train.path, f"data.val_path='{other}'"), train, SELF)
    text = str(error.value)
    assert text.startswith(f"data.val_path: {other} does not match data.path {train.path}") and field in text
    assert "\n" not in text
