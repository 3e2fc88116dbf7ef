"""One training run from a config: check the data, prepare the run directory, resume, train, write the summary."""
import os

from hpcrnn import checkpoint as ckpt
from hpcrnn import comm as mpi
from hpcrnn.config import to_toml
from hpcrnn.errors import ConfigError
from hpcrnn.log import Writer, write_json
from hpcrnn.train import StopSignal, Trainer, model_meta


def train(config, comm, stream=None):
    """Trains per `config` on every rank of `comm`; rank 0 writes the run directory. Returns the summary.

    Raises Preempted (after writing a checkpoint) when a stop signal arrived."""
    from hpcrnn.data.loader import split_ranges
    from hpcrnn.data.schema import open_dataset
    info = open_dataset(config.data.path, comm=comm, check_finite=config.data.check_finite)
    splits = split_ranges(info, config.data.val_fraction, None if config.data.gap < 0 else config.data.gap)
    refuse_to_mix_runs(config, comm)
    writer = Writer(os.path.join(config.run_dir, "metrics.jsonl") if comm.rank == 0 else None,
                    active=comm.rank == 0, progress=config.train.progress, stream=stream)
    if comm.rank == 0:
        os.makedirs(config.run_dir, exist_ok=True)
        with open(os.path.join(config.run_dir, "config.toml"), "w") as handle:
            handle.write(to_toml(config))
    trainer = Trainer(config, comm, info, splits, writer)
    resumed_from = resume(trainer, config, comm, writer)
    writer.say(f"training {config.model.cell} (hidden {config.model.hidden_size}, layers {config.model.num_layers}, "
               f"{trainer.model.num_params} parameters) on {info.path}: {splits['train'][1] - splits['train'][0]} "
               f"train samples, {comm.size} rank(s), {trainer.steps_per_epoch} steps/epoch"
               + (f", resumed from {resumed_from}" if resumed_from else ""))
    stop = StopSignal().install()
    try:
        summary = trainer.run(stop)
    finally:
        stop.restore()
        writer.close()
    summary["resumed_from"] = resumed_from
    summary["checkpoint"] = ckpt.list_checkpoints(trainer.ckpt_dir)[0] if comm.rank == 0 and \
        ckpt.list_checkpoints(trainer.ckpt_dir) else None
    if comm.rank == 0:
        write_json(os.path.join(config.run_dir, "summary.json"), summary)
    return summary


def refuse_to_mix_runs(config, comm):
    """A new run (resume = never) must not append to another run's metrics or checkpoints."""
    error = None
    if comm.rank == 0 and config.checkpoint.resume == "never":
        held = (["metrics.jsonl"] if os.path.exists(os.path.join(config.run_dir, "metrics.jsonl")) else []) + \
            (["checkpoints"] if ckpt.list_checkpoints(os.path.join(config.run_dir, "checkpoints")) else [])
        if held:
            error = (f"run directory {config.run_dir} already holds a run ({', '.join(held)}): continue it with "
                     "--resume auto, or choose another --run-dir")
    error = mpi.agree_error(comm, error)
    if error:
        raise ConfigError(error)


def resume(trainer, config, comm, writer):
    """Restores the trainer from a checkpoint per checkpoint.resume (never | auto | PATH); rank 0 reads,
    everyone gets the same state by broadcast. Returns the path used or None."""
    mode = config.checkpoint.resume
    if mode == "never":
        return None
    if mode == "auto":
        found = ckpt.load_shared(comm, lambda: ckpt.load_latest(trainer.ckpt_dir, warn=writer.say))
    else:
        found = ckpt.load_shared(comm, lambda: (mode, *ckpt.load(mode)))
    if found is None:
        return None
    path, arrays, meta = found
    if meta["model"] != model_meta(trainer.model, trainer.loss):
        raise ckpt.CheckpointError(f"{path}: checkpoint model {meta['model']} does not match the config")
    trainer.restore(arrays, meta)
    return path
