"""`synth`: shapes, determinism by seed, the physics of the generators, and the files it writes."""
import h5py
import numpy as np
import pytest

from hpcrnn import comm as mpi
from hpcrnn.data import generators
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.synth import SynthSpec, write
from hpcrnn.errors import ConfigError
from helpers import digest

SELF = mpi.self_comm()


def test_sequences_do_not_depend_on_their_slab():
    together = generators.mackey_glass([3, 4, 5], 40, 2, seed=1)
    alone = generators.mackey_glass([4], 40, 2, seed=1)
    assert np.array_equal(together[1], alone[0])
    assert np.array_equal(generators.lorenz96([2, 9], 30, 5, 0)[1], generators.lorenz96([9], 30, 5, 0)[0])


def test_mackey_glass_stays_on_its_attractor():
    x = generators.mackey_glass([0, 1], 600, 1, seed=0)[:, :, 0]
    assert 0.2 < x.min() and x.max() < 1.5 and x.std() > 0.1          # chaotic, bounded, not a fixed point
    assert not np.allclose(x[0], x[1])


def test_mackey_glass_delay_embedding():
    x = generators.mackey_glass([0], 50, 3, seed=0)[0]
    assert np.array_equal(x[6:, 1], x[:-6, 0]) and np.array_equal(x[12:, 2], x[:-12, 0])


def test_lorenz96_is_chaotic_and_bounded():
    x = generators.lorenz96([0], 400, 8, seed=0)[0]
    assert np.abs(x).max() < 20 and x.std() > 2 and abs(x.mean() - 2.3) < 1.5


def test_sines_classes_are_told_apart_by_frequency():
    values, labels = generators.sines(range(40), 200, 1, seed=0, classes=2)
    crossings = (np.diff(np.sign(values[:, :, 0]), axis=1) != 0).sum(axis=1)
    assert crossings[labels == 1].mean() > 2 * crossings[labels == 0].mean()


@pytest.mark.parametrize("kind,form,classes", [("mackey-glass", "windows", 0), ("lorenz96", "series", 0),
                                               ("sines", "windows", 3), ("sines", "series", 0)])
def test_written_files_pass_the_schema(tmp_path, kind, form, classes):
    path = str(tmp_path / "s.h5")
    write(SynthSpec(kind=kind, sequences=9, length=20, features=4, out=path, seed=2, horizon=2, classes=classes,
                    form=form), SELF)
    info = open_dataset(path, SELF)
    assert info.form == form and info.num_features == 4
    if form == "windows":
        assert info.num_samples == 9 and info.seq_len == 20
        assert info.task == ("classification" if classes else "regression")
        assert classes or info.output_size == 2
    else:
        assert info.num_rows == 180 and info.output_size == 2


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, monkeypatch):
    spec = dict(kind="lorenz96", sequences=11, length=16, features=4, horizon=3)
    write(SynthSpec(out=str(tmp_path / "a.h5"), seed=1, **spec), SELF)
    monkeypatch.setattr("hpcrnn.data.synth.SLAB_BYTES", 1)           # one sequence per slab
    write(SynthSpec(out=str(tmp_path / "b.h5"), seed=1, **spec), SELF)
    write(SynthSpec(out=str(tmp_path / "c.h5"), seed=2, **spec), SELF)
    assert digest(tmp_path / "a.h5") == digest(tmp_path / "b.h5") != digest(tmp_path / "c.h5")


def test_windows_target_is_the_future_of_feature_zero(tmp_path):
    path = str(tmp_path / "w.h5")
    write(SynthSpec(kind="sines", sequences=3, length=10, features=2, out=path, seed=0, horizon=4), SELF)
    values, _ = generators.sines([0, 1, 2], 14, 2, seed=0)
    with h5py.File(path, "r") as handle:
        assert np.array_equal(handle["targets"][()], values[:, 10:, 0].astype(np.float32))


@pytest.mark.parametrize("change", [dict(kind="lorenz96", features=3), dict(classes=2, kind="lorenz96"),
                                    dict(sequences=0), dict(form="series", length=4, sequences=1, lookback=4)])
def test_bad_arguments_are_config_errors(tmp_path, change):
    spec = dict(kind="sines", sequences=4, length=10, features=4, out=str(tmp_path / "x.h5"))
    spec.update(change)
    with pytest.raises(ConfigError):
        write(SynthSpec(**spec), SELF)
