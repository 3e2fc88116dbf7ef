"""Evaluation: a checkpoint's metrics on a split of a data file (with the baselines of hpcrnn.scores), every
sum and count reduced over the ranks in one reduction; which checkpoint of a run directory to use."""
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


def evaluate_split(model, info, split, loss, comm, batch_size, reads="auto", scores=None):
    """Loss and metrics of `model` on the samples of `split` ((start, stop) or a data.splits.Split) of the file,
    summed over all ranks. `scores`
    (hpcrnn.scores, optional) also gets the model's outputs on every batch; its sums travel in the same
    reduction and its results join the metrics."""
    from hpcrnn.data.loader import iterate_in_order
    extra = scores.sums if scores is not None else np.zeros(0)
    sums = np.zeros(len(STAT_KEYS) + len(extra))
    problem = None                      # the first bad batch's message; later batches are read, not computed
    for batch in iterate_in_order(info, split, batch_size, comm, dtype=model.dtype, reads=reads):
        problem = problem or batch.problem
        if len(batch.x) and problem is None:
            outputs = None if scores is None else np.empty(model.output_shape(*batch.x.shape[:2]), model.dtype)
            stats = model.per_sample_stats(batch.x, batch.y, loss, lengths=batch.lengths, outputs=outputs)
            sums[:len(STAT_KEYS)] += [stats.get(k, 0.0) for k in STAT_KEYS]
            if scores is not None:         # the model's outputs from the same forward pass
                scores.add(batch.x, batch.y, batch.lengths, outputs)
    sums[len(STAT_KEYS):] = extra
    mpi.agree(comm, problem, DataError)
    if comm.size > 1:
        mpi.allreduce_sum(comm, sums)
    out = summarise(sums[:len(STAT_KEYS)], loss)
    if scores is not None:
        out.update(scores.results(sums[len(STAT_KEYS):], out))
    return out


def summarise(sums, loss):
    """The metrics of the global sums of STAT_KEYS."""
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


def check_targets(model, info):
    """Evaluation compares outputs with the file's targets or labels: their sizes must fit the model's."""
    if info.task == "regression" and info.output_size != model.output_size:
        raise DataError(f"{info.path}: has {info.output_size} target values a sample, the checkpoint's model "
                        f"predicts {model.output_size}")
    if info.task == "classification" and info.num_classes > model.output_size:
        raise DataError(f"{info.path}: has labels up to {info.num_classes - 1}, the checkpoint's model knows "
                        f"{model.output_size} classes")


def load_model_everywhere(path, comm, which=None):
    """(model, meta, checkpoint file) on every rank. `path` is a checkpoint file or a run directory: which =
    "best" (the default) takes its checkpoints/best.h5 when there is one, else, like "last", its newest valid
    step checkpoint (skipping damaged ones with a warning). Rank 0 reads and verifies; every rank raises the
    same error if there is none."""
    import os
    from hpcrnn.checkpoint import CheckpointError, best_path, load, load_latest, load_shared
    from hpcrnn.rundir import checkpoint_folder
    warn = lambda text: print(text, flush=True)

    def find():
        if not os.path.isdir(path):
            return (path, *load(path))
        best = best_path(checkpoint_folder(path))
        if which != "last" and os.path.exists(best):
            try:
                return (best, *load(best))
            except CheckpointError as exc:
                warn(f"warning: skipping damaged best checkpoint, using the newest one: {exc}")
        elif which == "best":
            warn(f"note: {path} has no best.h5 (checkpoint.keep_best off, or no validation split): using the "
                 "newest checkpoint")
        found = load_latest(checkpoint_folder(path), warn=warn)
        if found is None:
            raise CheckpointError(f"{path}: no valid checkpoint (step-*.h5) in this directory")
        return found

    if which not in (None, "best", "last"):
        raise ConfigError(f"--which: must be best or last, got {which!r}")
    if which and not os.path.isdir(path):           # every rank sees the same path: the same verdict
        raise ConfigError(f"--which {which}: applies to a run directory, {path} is a checkpoint file")
    used, arrays, meta = load_shared(comm, find)
    return model_from_checkpoint(arrays, meta), meta, used


def run_evaluate(checkpoint_path, data_path, comm, split="all", batch_size=256, which=None, season=None):
    """The metrics of a checkpoint (or a run directory's best/last one) on `split` of `data_path`, with
    baselines on the same windows; the same dict on every rank."""
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.scores import make_scores
    check_batch_size(batch_size)
    if season is not None and (isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1):
        raise ConfigError(f"--season: must be an integer >= 1 (steps in a season), got {season!r}")
    model, meta, checkpoint_path = load_model_everywhere(checkpoint_path, comm, which)
    info = open_dataset(data_path, comm=comm)
    check_compatible(model, info)
    check_targets(model, info)
    span = split_span(info, split, meta, comm)
    scores = make_scores(info, model.output_size, season or 0)
    metrics = evaluate_split(model, info, span, meta["model"]["loss"], comm, batch_size, scores=scores)
    return {"checkpoint": checkpoint_path, "step": meta["step"], "data": data_path, "split": split, **metrics}


def split_span(info, split, meta, comm):
    """The samples (a data.splits.Split) of `split` of the file `info` describes, chosen as the training run
    chose them (its data.split, data.seed, val_fraction and gap). A run that took its val (test) samples from
    data.val_path (test_path) evaluates all of the given file, which must not be its training file."""
    from hpcrnn.config import from_toml_text
    from hpcrnn.data.splits import Split, file_splits, other_file
    from hpcrnn.predict import same_file
    if split == "all":
        return Split(0, info.num_samples)
    data = from_toml_text(meta["config_toml"]).data
    other = other_file(data, split)
    if other:
        if same_file(info.path, data.path) and not same_file(info.path, other):
            raise DataError(f"{info.path}: is the run's training file; its {split} samples are in data.{split}_path "
                            f"{other}: give --data {other}")
        return Split(0, info.num_samples)
    span = file_splits(info, data, comm).get(split)
    if span is None or len(span) == 0:
        raise DataError(f"{info.path}: has no {split!r} split (the training run used data.split = {data.split}, "
                        f"val_fraction {data.val_fraction})")
    return span


def format_metrics(metrics):
    """A readable line and table (model against baselines), then the same metrics as one JSON line."""
    from hpcrnn.scoretable import text_table
    values = " ".join(f"{k} {v:.6g}" for k, v in metrics.items() if isinstance(v, float) and k != "skill")
    return (f"evaluation of {metrics['checkpoint']} (step {metrics['step']}) on {metrics['split']} "
            f"({metrics['count']} samples): {values}\n" + text_table(metrics) + "\n" + json.dumps(metrics))

