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



@pytest.mark.parametrize("override, fragment", [
    (["schedule.gamma=-2"], "schedule.gamma: must be in (0, 1]"),
    (["schedule.gamma=0"], "schedule.gamma: must be in (0, 1]"),
    (["schedule.gamma=1.5"], "schedule.gamma: must be in (0, 1]"),
    (["optim.lr=0.01", "schedule.min_lr=0.1"], "schedule.min_lr: 0.1 is above optim.lr = 0.01"),
    (["schedule.min_lr=-0.1"], "schedule.min_lr: must be >= 0"),
    (["train.seed=-3"], "train.seed: must be >= 0"),
    (["model=3"], "model: expected a table of keys, got 3"),
    (["train=[1, 2]"], "train: expected a table of keys"),
    (["model.num_layers=100000"], "model.num_layers: must be in [1, 64]"),
    (["model.hidden_size=65537"], "model.hidden_size: must be in [1, 65536]"),
    (['run_dir="runs/a\\nb"'], "run_dir: 'runs/a\\nb' may not contain a line break or other control character"),
    (['run_dir="runs/\\u0007"'], "run_dir: 'runs/\\x07' may not contain"),
])
def test_nonsense_is_refused_naming_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, override)
    assert str(err.value).startswith(fragment.split(":")[0] + ":") and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_limits_themselves_are_accepted():
    c = load_config(None, ["schedule.gamma=1", "optim.lr=0.01", "schedule.min_lr=0.01", "train.seed=0",
                           "model.num_layers=64", "model.hidden_size=65536"])
    assert (c.schedule.gamma, c.schedule.min_lr, c.model.num_layers, c.model.hidden_size) == (1.0, 0.01, 64, 65536)


def test_section_given_a_scalar_with_flags_names_the_section(tmp_path):
    with pytest.raises(ConfigError, match=r"^model: expected a table of keys, got 3$"):
        load_config(None, ["model=3"], {"model.hidden_size": 8})
    path = tmp_path / "c.toml"
    path.write_text("model = 3\n")
    with pytest.raises(ConfigError, match=r"^model: expected a table of keys, got 3$"):
        load_config(str(path), [], {"model.hidden_size": 8})


def test_config_that_is_a_directory_or_not_text(tmp_path):
    with pytest.raises(ConfigError, match=f"^config file {tmp_path}: is a directory, not a TOML file$"):
        load_config(str(tmp_path))
    binary = tmp_path / "c.toml"
    binary.write_bytes(b"\xff\xfe[model]\n")
    with pytest.raises(ConfigError, match="c.toml"):
        load_config(str(binary))


def test_run_dir_that_is_a_file_or_under_a_file(tmp_path):
    existing = tmp_path / "taken"
    existing.write_text("user data\n")
    with pytest.raises(ConfigError, match=f"^run_dir: {existing} is a file, not a directory$"):
        load_config(None, [], {"run_dir": str(existing)})
    with pytest.raises(ConfigError, match=f"^run_dir: {existing} is a file, not a directory \\(so "):
        load_config(None, [], {"run_dir": str(existing / "sub" / "run")})
    assert existing.read_text() == "user data\n"
    assert load_config(None, [], {"run_dir": str(tmp_path / "new" / "run")}).run_dir.endswith("new/run")


STRINGS = ["plain", "with space", 'quote " and \\ backslash', "'single'", '"""triple"""', "'''", "\\u0041 not escape",
           "tab\there", "new\nline", "cr\rreturn", "nul\x00", "bell\x07", "esc\x1b[0m", "del\x7f", "é ü ß 漢字 🚀",
           "\u2028\u2029", "\x85", "#not comment", "[not.table]", "key = value", ""]


@pytest.mark.parametrize("text", STRINGS)
def test_every_string_round_trips_through_toml(text):
    c = load_config(None, [], {"data.path": text, "checkpoint.resume": text, "model.cell": "lstm",
                               "run_dir": "runs/" + "".join(ch for ch in text if ch.isprintable())})
    assert from_toml_text(to_toml(c)) == c
    assert from_toml_text(to_toml(c)).data.path == text
