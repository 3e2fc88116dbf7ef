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


def test_check_finite_off_skips_the_nan_scan(tmp_path):
    path = str(tmp_path / "nan.h5")
    fixtures.BAD_FILES["nan_inputs"][0](path)
    assert open_dataset(path, SELF, check_finite=False).num_samples == 50


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
