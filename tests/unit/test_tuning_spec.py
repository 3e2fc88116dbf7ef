"""Sweep specs (hpcrnn/tuning/spec.py) and their expansion into trials (trials.py): what is accepted, the
one-line error of each bad spec, and trials that depend only on (spec, seed, trial index)."""
import math
import tomllib

import pytest

from hpcrnn.errors import ConfigError
from hpcrnn.tuning.spec import parse_spec
from hpcrnn.tuning.trials import expand, grid_points, trial_config

BASE = """
[data]
path = "x.h5"
val_fraction = 0.2
[train]
epochs = 9
"""


def spec_of(text, base=BASE):
    return parse_spec(tomllib.loads(text + "\n" + base), "s.toml")


def error_of(text, base=BASE):
    with pytest.raises(ConfigError) as caught:
        spec_of(text, base)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s.toml: "), message
    return message


def test_a_full_spec():
    spec = spec_of('[grid]\n"optim.lr" = [1e-3, 3e-3]\nmodel.num_layers = [1, 2]\n'
                   '[random]\n"model.hidden_size" = {choice = [32, 64]}\n'
                   'optim.weight_decay = {loguniform = [1e-6, 1e-3]}\n'
                   '[sweep]\ntrials = 3\nseed = 7\nmonitor = "val_rmse"\nrungs = [1, 3]\nreduction_factor = 3\n')
    assert spec.grid == (("optim.lr", (1e-3, 3e-3)), ("model.num_layers", (1, 2)))
    assert spec.random == (("model.hidden_size", ("choice", (32, 64))),
                           ("optim.weight_decay", ("loguniform", (1e-6, 1e-3))))
    assert (spec.trials, spec.seed, spec.rungs, spec.reduction_factor) == (3, 7, (1, 3), 3.0)
    assert (spec.monitor, spec.metric, spec.maximize) == ("val_rmse", "rmse", False)
    assert spec.base == {"data.path": "x.h5", "data.val_fraction": 0.2, "train.epochs": 9}
    assert spec.swept_keys == ["optim.lr", "model.num_layers", "model.hidden_size", "optim.weight_decay"]


def test_defaults_and_top_level_settings():
    spec = spec_of('trials = 2\nmonitor = "val_accuracy"\n[grid]\n"optim.lr" = [1e-3]\n', base="")
    assert (spec.trials, spec.seed, spec.monitor, spec.maximize, spec.rungs) == (2, 0, "val_accuracy", True, ())
    assert spec.reduction_factor == 3.0


@pytest.mark.parametrize("text, fragment", [
    ('[grid]\n"model.hiden_size" = [4]\n', "unknown config key 'model.hiden_size' (known in model: cell,"),
    ('[grid]\n"modl.hidden_size" = [4]\n', "unknown config key 'modl.hidden_size' (sections: data,"),
    ('[random]\n"optim.lrate" = {uniform = [0.1, 0.2]}\n', "unknown config key 'optim.lrate'"),
    ('[grid]\n"optim.lr" = []\n', "[grid] 'optim.lr': empty list"),
    ('[grid]\n"optim.lr" = 0.1\n', "[grid] 'optim.lr': expected a list of values"),
    ('[grid]\n"optim.lr" = [[0.1]]\n', "values must be numbers, strings or booleans"),
    ('[random]\n"optim.lr" = {lognormal = [1, 2]}\n', "unknown distribution 'lognormal'"),
    ('[random]\n"optim.lr" = {loguniform = [0, 1e-2]}\n', "loguniform needs 0 < low"),
    ('[random]\n"optim.lr" = {uniform = [0.1, 0.2, 0.3]}\n', "uniform needs [low, high] (two numbers)"),
    ('[random]\n"optim.lr" = {uniform = [0.2, 0.1]}\n', "uniform needs low < high"),
    ('[random]\n"model.hidden_size" = {randint = [4.5, 8]}\n', "randint needs two integers"),
    ('[random]\n"model.hidden_size" = {choice = []}\n', "choice needs a non-empty list"),
    ('[random]\n"optim.lr" = 0.1\n', "expected one distribution"),
    ('[random]\n"optim.lr" = {uniform = [0.1, 0.2], choice = [1]}\n', "expected one distribution"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\ntrials = 0\n', "trials: expected an integer >= 1, got 0"),
    ('trials = -2\n[grid]\n"optim.lr" = [0.1]\n', "trials: expected an integer >= 1, got -2"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\ntrials = 2.5\n', "trials: expected an integer >= 1"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nseed = -1\n', "seed: expected an integer >= 0"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nmonitor = "loss"\n', "monitor: unknown metric 'loss'"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nrungs = [3, 1]\n', "rungs: expected increasing epoch numbers"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nrungs = [1, 9]\n', "rung 9 is not before the last epoch"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nreduction_factor = 1\n', "reduction_factor: expected a number > 1"),
    ('[grid]\n"optim.lr" = [0.1]\n[sweep]\nrung = [1]\n', "unknown sweep key 'rung' in [sweep]"),
    ('trials = 2\n[grid]\n"optim.lr" = [0.1]\n[sweep]\ntrials = 3\n', "'trials' is given twice"),
    ('[sweep]\ntrials = 3\n', "nothing to sweep"),
    ('[grid]\n"optim.lr" = [0.1]\n[random]\n"optim.lr" = {uniform = [0.1, 0.2]}\n', "in both [grid] and [random]"),
    ('[grid]\n"run_dir" = ["a", "b"]\n', "'run_dir' cannot be swept"),
    ('run_dir = "x"\n[grid]\n"optim.lr" = [0.1]\n', "'run_dir' is set by the sweep"),
    ('[grid]\n"checkpoint.resume" = ["never"]\n', "'checkpoint.resume' cannot be swept"),
    ('[grid]\n"optim.lr" = [0.1]\n[model]\nhiden_size = 4\n', "unknown config key 'model.hiden_size'"),
    ('[grid]\n"optim.lr" = [0.1]\n[optim]\nlr = -1.0\n', "optim.lr: must be > 0"),
])
def test_bad_specs_are_one_line_errors(text, fragment):
    assert fragment in error_of(text)


def test_rungs_need_validation_data():
    message = error_of('[grid]\n"optim.lr" = [0.1]\n[sweep]\nrungs = [1]\n', base='[data]\nval_fraction = 0.0\n')
    assert "rungs need validation data" in message


def test_nested_and_quoted_keys_are_the_same():
    quoted = spec_of('[grid]\n"optim.lr" = [0.1]\n[random]\n"model.hidden_size" = {choice = [4, 8]}\n')
    nested = spec_of('[grid]\noptim.lr = [0.1]\n[random]\nmodel.hidden_size = {choice = [4, 8]}\n')
    assert quoted.grid == nested.grid and quoted.random == nested.random


def test_grid_points_vary_the_last_key_fastest():
    assert grid_points((("a", (1, 2)), ("b", ("x", "y")))) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert grid_points(()) == [{}]


RANDOM = ('[grid]\n"model.num_layers" = [1, 2]\n[random]\n"optim.lr" = {loguniform = [1e-4, 1e-1]}\n'
          '"model.hidden_size" = {randint = [4, 6]}\n"model.cell" = {choice = ["lstm", "gru"]}\n'
          '"optim.clip_norm" = {uniform = [0.5, 2.0]}\n[sweep]\n')


def test_trials_are_grid_points_times_trials_and_deterministic():
    trials = expand(spec_of(RANDOM + "trials = 40\nseed = 3\n"))
    assert len(trials) == 80 and [t.index for t in trials] == list(range(80))
    passes = [sorted(t.params["model.num_layers"] for t in trials[i:i + 2]) for i in range(0, 80, 2)]
    assert passes == [[1, 2]] * 40, "every pass over the grid holds each point once"
    assert len({tuple(t.params["model.num_layers"] for t in trials[i:i + 2]) for i in range(0, 80, 2)}) == 2
    assert trials == expand(spec_of(RANDOM + "trials = 40\nseed = 3\n"))
    assert trials[:10] == expand(spec_of(RANDOM + "trials = 5\nseed = 3\n")), "more trials extend a sweep"
    other = expand(spec_of(RANDOM + "trials = 40\nseed = 4\n"))
    assert [t.params["optim.lr"] for t in other] != [t.params["optim.lr"] for t in trials]
    lrs = [t.params["optim.lr"] for t in trials]
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs)
    decades = {math.floor(math.log10(lr)) for lr in lrs}
    assert decades == {-4, -3, -2}, "loguniform covers every decade"
    assert {t.params["model.hidden_size"] for t in trials} == {4, 5, 6}, "randint includes both ends"
    assert {t.params["model.cell"] for t in trials} == {"lstm", "gru"}
    assert all(0.5 <= t.params["optim.clip_norm"] <= 2.0 for t in trials)
    assert all(type(t.params["model.hidden_size"]) is int and type(t.params["optim.lr"]) is float for t in trials)


def test_trial_config_is_validated_and_names_the_trial(tmp_path):
    data = tmp_path / "d.h5"
    data.write_bytes(b"")
    spec = spec_of('[grid]\n"model.cell" = ["lstm", "nope"]\n', base=f'[data]\npath = "{data}"\n')
    good, bad = sorted(expand(spec), key=lambda t: t.params["model.cell"])
    config = trial_config(spec, good, str(tmp_path / "out"))
    assert config.run_dir == str(tmp_path / "out" / good.name) and config.checkpoint.resume == "auto"
    assert config.model.cell == "lstm" and config.data.path == str(data)
    with pytest.raises(ConfigError, match=rf"s.toml: {bad.name} \(model.cell=nope\): model.cell: unknown cell"):
        trial_config(spec, bad, str(tmp_path / "out"))
    missing = spec_of('[grid]\n"model.cell" = ["lstm"]\n', base='[data]\npath = "/no/such.h5"\n')
    with pytest.raises(ConfigError, match="data.path: no such file: /no/such.h5"):
        trial_config(missing, expand(missing)[0], str(tmp_path / "out"))
