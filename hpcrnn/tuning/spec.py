"""The sweep spec (SWEEP.toml), read and validated once: a base training config, `[grid]`, `[random]` and the
sweep's own settings (`[sweep]`: trials, seed, monitor, rungs, reduction_factor). Every problem is a one-line
ConfigError that names the file and the key."""
import dataclasses
import math
from dataclasses import dataclass

from hpcrnn.config import read_toml
from hpcrnn.errors import ConfigError
from hpcrnn.monitor import HIGHER_IS_BETTER

# monitor name -> (key of the metric in metrics.jsonl's eval lines, larger is better)
MONITORS = {name: (name[len("val_"):], higher) for name, higher in HIGHER_IS_BETTER.items()}
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
SWEEP_KEYS = ("trials", "seed", "monitor", "rungs", "reduction_factor")
TOP_LEVEL_KEYS = ("trials", "seed", "monitor")      # also accepted outside [sweep]
OWNED_KEYS = ("run_dir", "checkpoint.resume")      # the sweep sets them for every trial
SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Spec:
    """A validated spec. `base`: the base training config as flat {"section.key": value}; `grid`: ((key,
    (value, ...)), ...); `random`: ((key, (distribution, args)), ...), both in the file's order."""
    path: str
    base: dict
    grid: tuple = ()
    random: tuple = ()
    trials: int = 1
    seed: int = 0
    monitor: str = "val_loss"
    rungs: tuple = ()
    reduction_factor: float = 3.0

    @property
    def metric(self):
        return MONITORS[self.monitor][0]

    @property
    def maximize(self):
        return MONITORS[self.monitor][1]

    @property
    def swept_keys(self):
        return [key for key, _ in self.grid] + [key for key, _ in self.random]

    def identity(self):
        """What decides the trials and their early stopping (all but `trials`, which may grow), JSON-able."""
        return {"base": self.base, "grid": [[k, list(v)] for k, v in self.grid],
                "random": [[k, d, list(a)] for k, (d, a) in self.random], "seed": self.seed,
                "monitor": self.monitor, "rungs": list(self.rungs), "reduction_factor": self.reduction_factor}


def load_spec(path):
    return parse_spec(read_toml(path, "sweep spec"), path)


def parse_spec(raw, path="spec"):
    """A Spec from the parsed TOML `raw`; raises ConfigError("PATH: ...") on the first problem."""
    try:
        return _parse(dict(raw), path)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _parse(raw, path):
    grid = tuple(_grid_entries(raw.pop("grid", {}), ""))
    random = tuple(_random_entries(raw.pop("random", {}), ""))
    settings = _settings(raw)
    base = dict(_flat(raw, ""))
    swept = [key for key, _ in grid] + [key for key, _ in random]
    if not swept:
        raise ConfigError("nothing to sweep: give [grid] lists and/or [random] distributions")
    for key in swept:
        check_key(key)
    both = sorted(set(k for k, _ in grid) & set(k for k, _ in random))
    if both:
        raise ConfigError(f"'{both[0]}' is in both [grid] and [random]")
    for key in OWNED_KEYS:
        if key in base:
            raise ConfigError(f"'{key}' is set by the sweep for each trial (DIR/trial-NNNN, resume auto): remove it")
    spec = Spec(path=path, base=base, grid=grid, random=random, **settings)
    _check_base(spec)
    return spec


def check_key(key):
    """`key` must name a training config key (`section.key`, or a top-level one) that a trial may set."""
    from hpcrnn.config import Config
    defaults = Config()
    section, _, name = key.partition(".")
    holder = getattr(defaults, section, None) if name else None
    if key in OWNED_KEYS:
        raise ConfigError(f"'{key}' cannot be swept: the sweep sets it for each trial")
    known = holder is not None and dataclasses.is_dataclass(holder) and "." not in name \
        and name in {f.name for f in dataclasses.fields(holder)}
    if not known:
        sections = [f.name for f in dataclasses.fields(defaults) if dataclasses.is_dataclass(getattr(defaults, f.name))]
        hint = (f"known in {section}: {', '.join(f.name for f in dataclasses.fields(holder))}"
                if holder is not None and dataclasses.is_dataclass(holder) else f"sections: {', '.join(sections)}")
        raise ConfigError(f"unknown config key '{key}' ({hint})")


def _grid_entries(table, prefix):
    """(key, values) pairs of [grid]; `optim.lr = [...]` and `"optim.lr" = [...]` both work."""
    if not isinstance(table, dict):
        raise ConfigError(f"[grid]{' ' + prefix if prefix else ''}: expected a table of 'section.key' = [values]")
    for name, value in table.items():
        key = prefix + name
        if isinstance(value, dict):
            yield from _grid_entries(value, key + ".")
            continue
        if not isinstance(value, list):
            raise ConfigError(f"[grid] '{key}': expected a list of values, got {value!r}")
        if not value:
            raise ConfigError(f"[grid] '{key}': empty list (give at least one value)")
        _check_scalars(f"[grid] '{key}'", value)
        yield key, tuple(value)


def _random_entries(table, prefix):
    """(key, (distribution, args)) pairs of [random]; a table whose values are all tables is a section."""
    if not isinstance(table, dict):
        raise ConfigError(f"[random]{' ' + prefix if prefix else ''}: expected a table of 'section.key' = "
                          "{distribution = [...]}")
    for name, value in table.items():
        key = prefix + name
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            yield from _random_entries(value, key + ".")
        else:
            yield key, distribution(key, value)


def distribution(key, value):
    """(name, args) of `{choice = [...]}`, `{uniform = [lo, hi]}`, `{loguniform = [lo, hi]}` (0 < lo) or
    `{randint = [lo, hi]}` (integers, both ends included)."""
    where = f"[random] '{key}'"
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{loguniform = [1e-4, 1e-2]}} or "
                          f"{{choice = [32, 64]}} (choose from {', '.join(DISTRIBUTIONS)}), got {value!r}")
    (name, args), = value.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution '{name}' (choose from {', '.join(DISTRIBUTIONS)})")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {name} needs a non-empty list, got {args!r}")
    if name == "choice":
        _check_scalars(where, args)
        return name, tuple(args)
    if len(args) != 2 or not all(_is_number(a) for a in args):
        raise ConfigError(f"{where}: {name} needs [low, high] (two numbers), got {args!r}")
    low, high = args
    if name == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: randint needs two integers [low, high], got {args!r}")
    if low > high or (low == high and name != "randint"):
        raise ConfigError(f"{where}: {name} needs low < high, got {args!r}")
    if name == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs 0 < low, got {args!r}")
    return name, (low, high)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_scalars(where, values):
    for value in values:
        if not isinstance(value, SCALARS):
            raise ConfigError(f"{where}: values must be numbers, strings or booleans, got {value!r}")


def _settings(raw):
    """The sweep's own settings from [sweep] (and trials/seed/monitor at the top level); removed from raw."""
    table = raw.pop("sweep", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[sweep]: expected a table, got {table!r}")
    unknown = sorted(set(table) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"unknown sweep key '{unknown[0]}' in [sweep] (known: {', '.join(SWEEP_KEYS)})")
    for key in TOP_LEVEL_KEYS:
        if key in raw:
            if key in table:
                raise ConfigError(f"'{key}' is given twice, at the top and in [sweep]: keep one")
            table[key] = raw.pop(key)
    out = {}
    for key in ("trials", "seed"):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "trials" else 0):
                raise ConfigError(f"{key}: expected an integer >= {1 if key == 'trials' else 0}, got {value!r}")
            out[key] = value
    monitor = table.get("monitor", _base_monitor(raw))
    if monitor not in MONITORS:
        raise ConfigError(f"monitor: unknown metric {monitor!r} (choose from {', '.join(MONITORS)})")
    out["monitor"] = monitor
    rungs = table.get("rungs", [])
    if not isinstance(rungs, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                              for r in rungs) or rungs != sorted(set(rungs)):
        raise ConfigError(f"rungs: expected increasing epoch numbers >= 1, e.g. [1, 3, 9], got {rungs!r}")
    out["rungs"] = tuple(rungs)
    factor = table.get("reduction_factor", 3)
    if not _is_number(factor) or factor <= 1:
        raise ConfigError(f"reduction_factor: expected a number > 1 (keep the top 1/factor at each rung), "
                          f"got {factor!r}")
    out["reduction_factor"] = float(factor)
    return out


def _base_monitor(raw):
    """train.monitor of the base config where train has one, else val_loss."""
    train = raw.get("train")
    return train.get("monitor", "val_loss") if isinstance(train, dict) else "val_loss"


def _flat(tree, prefix):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def base_config(base):
    """The base training config (validated by hpcrnn.config; unknown keys are errors)."""
    from hpcrnn.config import load_config
    return load_config(None, (), base)


def _check_base(spec):
    config = base_config(spec.base)
    swept = spec.swept_keys
    if spec.rungs:
        if config.data.val_fraction <= 0 and not config.data.val_path and "data.val_fraction" not in swept:
            raise ConfigError("rungs need validation data: set data.val_fraction > 0 or data.val_path (rungs compare "
                              f"{spec.monitor} at epoch ends)")
        if "train.epochs" not in swept and spec.rungs[-1] >= config.train.epochs:
            raise ConfigError(f"rungs: rung {spec.rungs[-1]} is not before the last epoch "
                              f"(train.epochs = {config.train.epochs})")
