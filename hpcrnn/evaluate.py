"""Evaluation and prediction: metrics reduced over ranks, and predictions written row-parallel to HDF5."""
import json
import math

import numpy as np

from hpcrnn import comm as mpi
from hpcrnn.errors import ConfigError, DataError

STAT_KEYS = ("loss_sum", "count", "sq_err_sum", "abs_err_sum", "elem_count", "correct")


def check_batch_size(batch_size):
    """The one check of --batch-size for evaluate and predict (train's is train.batch_size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"--batch-size: must be an integer >= 1, got {batch_size!r}")


def resolve_loss(name, info):
    """The loss to train with: `auto` means cross_entropy for labelled data, mse otherwise."""
    if info.task == "classification":
        if name not in ("auto", "cross_entropy"):
            raise DataError(f"{info.path}: has /labels (classification) but model.loss is {name!r}; use cross_entropy")
        return "cross_entropy"
    if name == "cross_entropy":
        raise DataError(f"{info.path}: model.loss cross_entropy needs /labels, the file has regression targets")
    return "mse" if name == "auto" else name


def evaluate_split(model, info, split, loss, comm, batch_size, reads="auto"):
    """Loss and metrics of `model` on samples [start, stop) of the file, summed over all ranks."""
    from hpcrnn.data.loader import iterate_in_order
    sums = np.zeros(len(STAT_KEYS))
    for batch in iterate_in_order(info, split, batch_size, comm, dtype=model.dtype, reads=reads):
        if len(batch.x):
            stats = model.per_sample_stats(batch.x, batch.y, loss, lengths=batch.lengths)
            sums += [stats.get(k, 0.0) for k in STAT_KEYS]
    if comm.size > 1:
        mpi.allreduce_sum(comm, sums)
    total = dict(zip(STAT_KEYS, sums))
    count = max(total["count"], 1.0)
    out = {"loss": total["loss_sum"] / count, "count": int(total["count"])}
    if loss == "cross_entropy":
        out["accuracy"] = total["correct"] / count
    else:
        elems = max(total["elem_count"], 1.0)
        out["rmse"] = math.sqrt(total["sq_err_sum"] / elems)
        out["mae"] = total["abs_err_sum"] / elems
    return out


def model_from_checkpoint(arrays, meta):
    from hpcrnn.checkpoint import unpack
    from hpcrnn.model import Model
    model = Model.from_meta(meta["model"])
    model.load_state_dict(unpack(arrays)[0])
    return model


def check_compatible(model, info):
    if info.num_features != model.input_size:
        raise DataError(f"{info.path}: has {info.num_features} features, the checkpoint's model expects "
                        f"{model.input_size}")
    if info.head != model.head:
        raise DataError(f"{info.path}: targets are for head {info.head!r}, the model has head {model.head!r}")


def load_model_everywhere(path, comm):
    """(model, meta, checkpoint file) on every rank. `path` is a checkpoint file or a run directory (its
    newest valid checkpoint, skipping damaged ones with a warning); rank 0 reads and verifies, and every rank
    raises the same error if there is none."""
    import os
    from hpcrnn.checkpoint import CheckpointError, load, load_latest, load_shared
    from hpcrnn.rundir import checkpoint_folder

    def find():
        if not os.path.isdir(path):
            return (path, *load(path))
        found = load_latest(checkpoint_folder(path), warn=lambda text: print(text, flush=True))
        if found is None:
            raise CheckpointError(f"{path}: no valid checkpoint (step-*.h5) in this directory")
        return found

    used, arrays, meta = load_shared(comm, find)
    return model_from_checkpoint(arrays, meta), meta, used


def run_evaluate(checkpoint_path, data_path, comm, split="all", batch_size=256):
    from hpcrnn.data.schema import open_dataset
    check_batch_size(batch_size)
    model, meta, checkpoint_path = load_model_everywhere(checkpoint_path, comm)
    info = open_dataset(data_path, comm=comm)
    check_compatible(model, info)
    span = split_span(info, split, meta)
    metrics = evaluate_split(model, info, span, meta["model"]["loss"], comm, batch_size)
    return {"checkpoint": checkpoint_path, "data": data_path, "split": split, **metrics}


def split_span(info, split, meta):
    """Sample range of `split`, chosen as the training run chose it (its val_fraction and gap)."""
    from hpcrnn.config import from_toml_text
    from hpcrnn.data.loader import split_ranges
    if split == "all":
        return (0, info.num_samples)
    data = from_toml_text(meta["config_toml"]).data
    span = split_ranges(info, data.val_fraction, None if data.gap < 0 else data.gap).get(split)
    if span is None or span[1] <= span[0]:
        raise DataError(f"{info.path}: has no {split!r} split (the training run used val_fraction "
                        f"{data.val_fraction})")
    return span


def format_metrics(metrics):
    """A readable line, then the same metrics as one JSON line (for scripts)."""
    values = " ".join(f"{k} {v:.6g}" for k, v in metrics.items() if isinstance(v, float))
    return (f"evaluation of {metrics['checkpoint']} on {metrics['split']} ({metrics['count']} samples): {values}\n"
            + json.dumps(metrics))

