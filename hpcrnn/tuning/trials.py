"""Expands a spec into its trials, deterministically from (spec, seed): every grid point, `trials` times, each
pass in a seeded order, with the [random] keys drawn from a generator seeded by (seed, trial index); and each
trial's resolved config."""
import itertools
import math
import os
from dataclasses import dataclass

import numpy as np

from hpcrnn.errors import ConfigError

MAX_TRIALS = 10000          # trial-NNNN
DRAW_STREAM, ORDER_STREAM = 0, 1    # random streams: (seed, 0, trial) draws [random] values, (seed, 1, pass) orders


@dataclass(frozen=True)
class Trial:
    index: int
    params: dict            # {"section.key": value} of the swept keys, grid keys first, in the spec's order

    @property
    def name(self):
        return trial_name(self.index)


def trial_name(index):
    return f"trial-{index:04d}"


def grid_points(grid):
    """Every combination of the grid's values, the last key varying fastest; [{}] for no grid."""
    keys = [key for key, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(values for _, values in grid))]


def sample(name, args, rng):
    """One draw of a [random] distribution (Python scalars, so they go into TOML and JSON unchanged)."""
    if name == "choice":
        return args[int(rng.integers(len(args)))]
    low, high = args
    if name == "uniform":
        return float(rng.uniform(low, high))
    if name == "loguniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if name == "randint":
        return int(rng.integers(low, high + 1))
    raise ValueError(f"unknown distribution {name!r}")


def expand(spec):
    """The trials: the grid points `trials` times over, each pass in its own seeded order (so the first trials to
    reach a rung are not one corner of the grid), each trial with its own draw of every [random] key. The
    values of trial i never depend on how many trials there are: more trials extend a sweep."""
    points = grid_points(spec.grid)
    count = len(points) * spec.trials
    if count > MAX_TRIALS:
        raise ConfigError(f"{spec.path}: {count} trials ({len(points)} grid points x trials = {spec.trials}); "
                          f"at most {MAX_TRIALS}")
    trials = []
    for index in range(count):
        repeat, slot = divmod(index, len(points))
        order = np.random.default_rng([spec.seed, ORDER_STREAM, repeat]).permutation(len(points))
        rng = np.random.default_rng([spec.seed, DRAW_STREAM, index])
        drawn = {key: sample(name, args, rng) for key, (name, args) in spec.random}
        trials.append(Trial(index, {**points[order[slot]], **drawn}))
    return trials


def trial_values(spec, trial, out):
    """The flat config of one trial: base, then its swept values, then its run directory (resume auto)."""
    values = {**spec.base, **trial.params}
    if isinstance(values.get("data.path"), str) and values["data.path"]:
        values["data.path"] = os.path.abspath(values["data.path"])
    return {**values, "run_dir": os.path.join(os.path.abspath(out), trial.name), "checkpoint.resume": "auto"}


def trial_config(spec, trial, out):
    """The validated config of one trial (hpcrnn.config); an error names the trial and its values."""
    from hpcrnn.config import load_config
    try:
        config = load_config(None, (), trial_values(spec, trial, out))
    except ConfigError as error:
        raise ConfigError(f"{spec.path}: {trial.name} ({format_params(trial.params)}): {error}") from None
    if not config.data.path:
        raise ConfigError(f"{spec.path}: data.path: no dataset given (set [data] path in the spec)")
    if not os.path.isfile(config.data.path):
        raise ConfigError(f"{spec.path}: data.path: no such file: {config.data.path}")
    return config


def format_value(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params):
    return ", ".join(f"{key}={format_value(value)}" for key, value in params.items())
