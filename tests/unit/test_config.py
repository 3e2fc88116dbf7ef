"""Config loading: TOML, --set overrides, unknown keys and bad values give one-line ConfigErrors."""
import pytest

from hpcrnn.config import from_toml_text, load_config, to_toml
from hpcrnn.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('run_dir = "r"\n[model]\ncell = "lstm"\nhidden_size = 32\n[optim]\nlr = 0.01\n')
    c = load_config(str(path), ["model.hidden_size=16", "train.epochs=3", "optim.nesterov=false", "data.path=x.h5"])
    assert (c.model.cell, c.model.hidden_size, c.train.epochs, c.optim.lr, c.data.path) == ("lstm", 16, 3, 0.01, "x.h5")
    assert c.run_dir == "r"


def test_flag_values_win_and_keep_any_characters(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\npath = "from-file.h5"\n[model]\nhidden_size = 8\n')
    c = load_config(str(path), ["model.hidden_size=16"], {"data.path": "it's \"odd\".h5", "model.hidden_size": 32})
    assert c.data.path == "it's \"odd\".h5" and c.model.hidden_size == 32


def test_round_trip_through_toml():
    c = load_config(None, ["model.cell=gru", "data.path=some file.h5", "schedule.name=cosine", "optim.lr=3e-4"])
    assert from_toml_text(to_toml(c)) == c


@pytest.mark.parametrize("override, fragment", [
    (["model.colour=red"], "unknown config key 'model.colour'"),
    (["nosuch.key=1"], "unknown config key 'nosuch'"),
    (["model.cell=transformer"], "model.cell: unknown cell 'transformer'"),
    (["train.batch_size=0"], "train.batch_size: must be >= 1"),
    (["train.epochs=two"], "train.epochs: expected an integer"),
    (["optim.lr=-1"], "optim.lr: must be > 0"),
    (["optim.lr=nan"], "optim.lr: expected a finite number"),
    (["optim.name=rmsprop"], "optim.name: unknown optimizer"),
    (["data.reads=mmap"], "data.reads: unknown read mode 'mmap'"),
    (["optim.nesterov=true"], "optim.nesterov: needs optim.momentum > 0"),
    (["train.nonfinite=ignore"], "train.nonfinite: must be skip or stop"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["model"], "expected section.key=value"),
])
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\ncell=")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(str(bad))

