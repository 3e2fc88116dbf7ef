"""Schema v1 validation: valid files of each form, and one clear error per kind of broken file."""
import numpy as np
import pytest

import data_fixtures as fixtures
from hpcrnn import comm as mpi
from hpcrnn.data.schema import open_dataset
from hpcrnn.errors import DataError

SELF = mpi.self_comm()


@pytest.mark.parametrize("name", sorted(fixtures.BAD_FILES))
def test_bad_file_gives_one_line_error_naming_the_file(tmp_path, name):
    make, text = fixtures.BAD_FILES[name]
    path = str(tmp_path / f"{name}.h5")
    make(path)
    with pytest.raises(DataError) as caught:
        open_dataset(path, SELF)
    message = str(caught.value)
    assert text in message and path in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_dataset(str(tmp_path / "absent.h5"), SELF)


@pytest.mark.parametrize("name", sorted(fixtures.BAD_VALUES))
def test_bad_values_are_left_to_the_batch_check_not_scanned_at_open(tmp_path, name):
    path = str(tmp_path / f"{name}.h5")
    fixtures.BAD_VALUES[name][0](path)
    info = open_dataset(path, SELF)
    assert info.check_finite and not info.checked
    assert not open_dataset(path, SELF, check_finite=False).check_finite


def test_windows_and_series_descriptions(tmp_path):
    info = open_dataset(fixtures.write_windows(str(tmp_path / "w.h5"), count=30, seq_len=6, features=2,
                                               splits={"train": (0, 20), "val": (22, 30)}), SELF)
    assert (info.form, info.num_samples, info.seq_len, info.num_features, info.output_size) == ("windows", 30, 6, 2, 2)
    assert info.task == "regression" and info.head == "last" and info.splits["val"] == (22, 30)
    series = open_dataset(fixtures.write_series(str(tmp_path / "s.h5"), rows=50, features=3, lookback=4,
                                                horizon=3, stride=2, target_columns=(0, 2)), SELF)
    assert series.form == "series" and series.num_samples == (50 - 4 - 3) // 2 + 1
    assert series.output_size == 6 and series.target_columns == (0, 2) and series.num_rows == 50
    assert not series.has_stats and np.isscalar(series.lookback)


def _set_attribute(path, name, value):
    import h5py
    with h5py.File(path, "a") as handle:
        handle.attrs[name] = value
    return path


@pytest.mark.parametrize("value", ["1", b"1", np.array([1, 2]), np.float64(1.0), np.bool_(True), np.int64(2)])
def test_schema_version_must_be_the_integer_one(tmp_path, value):
    path = _set_attribute(fixtures.write_windows(str(tmp_path / "w.h5")), "hpcrnn_schema", value)
    with pytest.raises(DataError, match=r"root attribute hpcrnn_schema = .* is not supported \(expected the integer 1\)"):
        open_dataset(path, SELF)


@pytest.mark.parametrize("value", [np.int64(1), np.int32(1), np.uint8(1), np.array([1])])
def test_schema_version_one_in_any_integer_type_is_accepted(tmp_path, value):
    path = _set_attribute(fixtures.write_windows(str(tmp_path / "w.h5")), "hpcrnn_schema", value)
    assert open_dataset(path, SELF).num_samples == 50


@pytest.mark.parametrize("splits, message", [
    ({"train": (0, 30), "val": (25, 40)}, "split_train = [0, 30] and split_val = [25, 40] overlap"),
    ({"train": (0, 30), "val": (30, 40), "test": (35, 50)}, "split_val = [30, 40] and split_test = [35, 50] overlap"),
    ({"train": (10, 50), "test": (0, 20)}, "split_test = [0, 20] and split_train = [10, 50] overlap"),
    ({"train": (0, 50), "val": (10, 20), "test": (30, 40)}, "split_train = [0, 50] and split_val = [10, 20] overlap"),
    ({"train": (0, 0), "val": (0, 50)}, "split_train = [0, 0] is empty"),
    ({"train": (7, 7)}, "split_train = [7, 7] is empty"),
])
def test_overlapping_or_empty_train_splits_are_refused(tmp_path, splits, message):
    path = fixtures.write_windows(str(tmp_path / "w.h5"), splits=splits)
    with pytest.raises(DataError) as caught:
        open_dataset(path, SELF)
    assert str(caught.value) == f"{path}: root attribute{'s' if 'overlap' in message else ''} {message}" \
        + ("" if "overlap" in message else " (no training samples)")


def test_empty_val_and_test_splits_as_prepare_writes_them_are_accepted(tmp_path):
    path = fixtures.write_windows(str(tmp_path / "w.h5"), splits={"train": (0, 50), "val": (50, 50), "test": (50, 50)})
    assert open_dataset(path, SELF).splits == {"train": (0, 50), "val": (50, 50), "test": (50, 50)}


def _labels_file(path, labels):
    import h5py
    labels = np.asarray(labels, dtype=np.int64)
    with h5py.File(path, "w") as handle:
        handle.attrs["hpcrnn_schema"] = np.int64(1)
        handle.create_dataset("inputs", data=np.zeros((len(labels), 1, 1), np.float32))
        handle.create_dataset("labels", data=labels)
    return path


@pytest.mark.parametrize("count, sample, value, limit", [(50, 5, 10 ** 6, 1000), (50, 49, 1000, 1000),
                                                         (3000, 2999, 3000, 3000), (150_000, 7, 100_000, 100_000)])
def test_too_many_classes_are_refused_naming_labels_sample_and_value(tmp_path, count, sample, value, limit):
    labels = np.arange(count) % 3
    labels[sample] = value
    labels[-1] = max(labels[-1], value - 1) if sample != count - 1 else value   # a later, smaller offender too
    path = _labels_file(str(tmp_path / "l.h5"), labels)
    with pytest.raises(DataError) as caught:
        open_dataset(path, SELF)
    assert str(caught.value).startswith(f"{path}: /labels at sample {sample} is {value}: {value + 1} classes, "
                                        f"more than the limit of {limit}")


@pytest.mark.parametrize("count, value", [(50, 999), (3000, 2999)])
def test_classes_up_to_the_limit_are_accepted(tmp_path, count, value):
    labels = np.arange(count) % 3
    labels[count // 2] = value
    info = open_dataset(_labels_file(str(tmp_path / "l.h5"), labels), SELF)
    assert info.num_classes == value + 1 == info.output_size
