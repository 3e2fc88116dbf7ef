"""Training configuration: frozen dataclasses loaded from TOML, `--set section.key=value` overrides, validation."""
import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields

from hpcrnn.data.read_mode import READS
from hpcrnn.data.splits import SPLITS
from hpcrnn.errors import ConfigError
from hpcrnn.kernels import CELLS
from hpcrnn.kernels import LOSSES as MODEL_LOSSES
from hpcrnn.monitor import HIGHER_IS_BETTER

LOSSES = ("auto",) + MODEL_LOSSES              # auto: cross_entropy for labels, mse otherwise
MONITORS = tuple(HIGHER_IS_BETTER)   # hpcrnn.monitor.Monitor
MAX_LAYERS = 64             # upper bounds: beyond them a typo, not a model (a run would take hours to say so)
MAX_HIDDEN = 65536
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SURROGATE = re.compile(r"[\ud800-\udfff]")     # undecodable bytes of a path (surrogateescape): no TOML for them
TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    val_fraction: float = 0.1
    gap: int = -1              # samples left out between train and val; -1 = automatic (chronological only)
    split: str = "chronological"   # chronological | random | stratified, for files without split attributes
    seed: int = 0              # of the random and stratified selections (apart from train.seed: the same val set
                               # for every model seed)
    val_path: str = ""         # val samples from this file (same schema); then the whole data.path is train
    test_path: str = ""        # test samples (evaluate --split test) from this file
    buffer_mb: float = 64.0
    prefetch: bool = True
    reads: str = "auto"         # auto | direct | independent | collective (docs/data-format.md)
    shuffle: bool = True
    check_finite: bool = True


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gated"
    hidden_size: int = 64
    num_layers: int = 1
    loss: str = "auto"          # auto: cross_entropy for labels, mse otherwise
    dtype: str = "float32"
    dropout: float = 0.0        # nn.LSTM's dropout between stacked layers (training only); in [0, 1)
    bidirectional: bool = False  # torch's bidirectional layers (outputs 2H)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"          # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0      # global gradient norm; 0 = off


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"      # constant | step | cosine
    warmup_steps: int = 0
    step_size: int = 1000       # step schedule: decay every step_size steps
    gamma: float = 0.5
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64        # GLOBAL batch over all ranks
    seed: int = 0
    max_steps: int = 0          # 0 = no limit
    nonfinite: str = "skip"     # skip | stop
    log_every: int = 10
    progress: str = "auto"      # auto | bar | line | none
    overlap: bool = False       # non-blocking allreduce per layer during BPTT
    comm_timeout_s: float = 600.0
    numba_threads: int = 0      # 0 = SLURM_CPUS_PER_TASK or 1; BLAS threads: OPENBLAS_NUM_THREADS (default 1)
    monitor: str = "val_loss"   # the val metric that picks the best model and drives early stopping
    early_stopping_patience: int = 0     # evaluations without improvement before training stops; 0 = off
    early_stopping_min_delta: float = 0.0   # an improvement must beat the best by more than this


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0        # 0 = only at epoch ends
    every_epochs: int = 1
    keep: int = 3
    max_failures: int = 3       # checkpoints that may fail in a row before the run stops (the final one: none)
    resume: str = "never"       # never | auto | PATH
    keep_best: bool = True      # checkpoints/best.h5: the checkpoint with the best monitored value (never pruned)


@dataclass(frozen=True)
class Config:
    run_dir: str = "runs/latest"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def _coerce(where, value, typ):
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _is_int(value))):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return out
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _is_int(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


def _build(cls, values, prefix):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table of keys, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ConfigError(f"unknown config key '{where}' (known: {', '.join(sorted(known))})")
        typ = known[key].type
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, where)
        else:
            kwargs[key] = _coerce(where, value, {"int": int, "float": float, "bool": bool}.get(typ, typ)
                                  if isinstance(typ, str) else typ)
    return cls(**kwargs)


def _nest(overrides):
    tree = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
        node[parts[-1]] = _parse_value(value.strip())
    return tree


def _parse_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base, extra):
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_toml(path, what):
    """The TOML table in file `path`; a one-line ConfigError naming `what` and the file otherwise."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path}: is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: {exc}") from None


def load_config(path=None, overrides=(), values=None):
    """Config from an optional TOML file, then `section.key=value` override strings, then `values`
    ({"section.key": typed value}, e.g. from command-line flags); validated."""
    raw = read_toml(path, "config file") if path else {}
    tree = _merge(raw, _nest(overrides))
    for key, value in (values or {}).items():
        *sections, name = key.split(".")
        node = tree
        for depth, section in enumerate(sections, 1):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(sections[:depth])}: expected a table of keys, got {node!r}")
        node[name] = value
    config = validate(_build(Config, tree, ""))
    _check_run_dir(config.run_dir)
    return config


def _check_run_dir(run_dir):
    """The run directory, or the nearest existing path above it, must be a directory (checked before any work)."""
    path = os.path.abspath(run_dir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    above = "" if path == os.path.abspath(run_dir) else f" (so {run_dir} cannot be made)"
    _check(os.path.isdir(path), "run_dir", f"{path} is a file, not a directory{above}")


def _check(condition, where, message):
    if not condition:
        raise ConfigError(f"{where}: {message}")


def validate(c):
    _check(c.model.cell in CELLS, "model.cell", f"unknown cell {c.model.cell!r} (choose from {', '.join(CELLS)})")
    _check(c.model.loss in LOSSES, "model.loss", f"unknown loss {c.model.loss!r} (choose from {', '.join(LOSSES)})")
    _check(c.data.reads in READS, "data.reads", f"unknown read mode {c.data.reads!r} (choose from {', '.join(READS)})")
    _check(c.model.dtype in ("float32", "float64"), "model.dtype", "must be float32 or float64")
    _check(1 <= c.model.hidden_size <= MAX_HIDDEN, "model.hidden_size", f"must be in [1, {MAX_HIDDEN}]")
    _check(1 <= c.model.num_layers <= MAX_LAYERS, "model.num_layers", f"must be in [1, {MAX_LAYERS}]")
    _check(0 <= c.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    _check(c.optim.name in ("sgd", "adam", "adamw"), "optim.name", f"unknown optimizer {c.optim.name!r} (sgd, adam, adamw)")
    _check(c.optim.lr > 0, "optim.lr", "must be > 0")
    _check(c.optim.clip_norm >= 0, "optim.clip_norm", "must be >= 0 (0 = off)")
    _check(0 <= c.optim.momentum < 1, "optim.momentum", "must be in [0, 1)")
    _check(not c.optim.nesterov or c.optim.momentum > 0, "optim.nesterov", "needs optim.momentum > 0")
    _check(c.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(0 <= c.optim.beta1 < 1 and 0 <= c.optim.beta2 < 1, "optim.beta1/beta2", "must be in [0, 1)")
    _check(c.schedule.name in ("constant", "step", "cosine"), "schedule.name", f"unknown schedule {c.schedule.name!r}")
    _check(c.schedule.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0")
    _check(c.schedule.step_size >= 1, "schedule.step_size", "must be >= 1")
    _check(0 < c.schedule.gamma <= 1, "schedule.gamma", "must be in (0, 1] (the factor of each decay step)")
    _check(c.schedule.min_lr >= 0, "schedule.min_lr", "must be >= 0")
    _check(c.schedule.min_lr <= c.optim.lr, "schedule.min_lr",
           f"{c.schedule.min_lr:g} is above optim.lr = {c.optim.lr:g} (the learning rate would rise)")
    _check(c.train.seed >= 0, "train.seed", "must be >= 0")
    _check(c.train.epochs >= 1, "train.epochs", "must be >= 1")
    _check(c.train.batch_size >= 1, "train.batch_size", "must be >= 1")
    _check(c.train.max_steps >= 0, "train.max_steps", "must be >= 0")
    _check(c.train.nonfinite in ("skip", "stop"), "train.nonfinite", "must be skip or stop")
    _check(c.train.progress in ("auto", "bar", "line", "none"), "train.progress", "must be auto, bar, line or none")
    _check(c.train.log_every >= 1, "train.log_every", "must be >= 1")
    _check(c.train.comm_timeout_s >= 0, "train.comm_timeout_s", "must be >= 0 (0 = wait forever)")
    _check(c.train.monitor in MONITORS, "train.monitor", f"unknown metric {c.train.monitor!r} (choose from "
           f"{', '.join(MONITORS)})")
    _check(c.train.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 = off)")
    _check(c.train.early_stopping_min_delta >= 0, "train.early_stopping_min_delta", "must be >= 0")
    _check(c.train.numba_threads >= 0, "train.numba_threads", "must be >= 0 (0 = SLURM_CPUS_PER_TASK or 1)")
    _check(0 <= c.data.val_fraction < 1, "data.val_fraction", "must be in [0, 1)")
    _check(c.data.split in SPLITS, "data.split", f"unknown split {c.data.split!r} (choose from {', '.join(SPLITS)})")
    _check(c.data.gap < 0 or c.data.split == "chronological", "data.gap", f"applies to chronological splits only "
           f"(data.split = {c.data.split} leaves no gap: its val samples are drawn from the whole file)")
    _check(c.data.seed >= 0, "data.seed", "must be >= 0")
    _check(c.data.buffer_mb > 0, "data.buffer_mb", "must be > 0")
    _check(c.checkpoint.keep >= 1, "checkpoint.keep", "must be >= 1")
    _check(c.checkpoint.max_failures >= 1, "checkpoint.max_failures", "must be >= 1")
    _check(c.checkpoint.every_steps >= 0 and c.checkpoint.every_epochs >= 0, "checkpoint.every_*", "must be >= 0")
    _check(not CONTROL.search(c.run_dir), "run_dir", f"{c.run_dir!r} may not contain a line break or other "
           "control character")
    for key, value in _strings(as_dict(c)):
        _check(not SURROGATE.search(value), key, f"{value!r} is not valid text (bytes that are not UTF-8)")
    return c


def _strings(tree, prefix=""):
    """(dotted key, value) of every string in a nested dict."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _strings(value, f"{prefix}{key}.")
        elif isinstance(value, str):
            yield prefix + key, value


def as_dict(config):
    return dataclasses.asdict(config)


def to_toml(config):
    """The resolved config as TOML text (scalars only, one table per section)."""
    top, tables = [], []
    for key, value in as_dict(config).items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        else:
            top.append(f"{key} = {_toml_value(value)}")
    return "\n".join(top + tables) + "\n"


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + "".join(TOML_ESCAPES.get(char) or (f"\\u{ord(char):04X}" if CONTROL.match(char) else char)
                         for char in str(value)) + '"'


def from_toml_text(text):
    return validate(_build(Config, tomllib.loads(text), ""))


