"""One training run from a config: check the data, take the run directory, resume, train, record the outcome."""
from hpcrnn import checkpoint as ckpt
from hpcrnn import comm as mpi
from hpcrnn.config import to_toml
from hpcrnn.errors import ConfigError
from hpcrnn.log import PhaseClock, Writer
from hpcrnn.placement import check_placement
from hpcrnn.process import StopSignal
from hpcrnn.rundir import RunDir
from hpcrnn.runinfo import blas_warning
from hpcrnn.train import Trainer


def train(config, comm, stream=None, stop=None):
    """Trains per `config` on every rank of `comm`; rank 0 writes the run directory. Returns the summary.

    `stop`: an installed process.StopSignal (the CLI installs one before anything else, and keeps it to
    the end, so that no signal finds the default handler); without one, train installs its own and restores
    the previous handlers when it returns. Raises checkpoint.Preempted after writing the checkpoint of the
    preempted state. summary.json's "state" says done, preempted or failed."""
    own_stop = stop is None
    stop = StopSignal().install() if own_stop else stop
    run_dir = RunDir(config.run_dir, writes=comm.rank == 0)
    try:
        return _train(config, comm, stream, stop, run_dir)
    finally:
        run_dir.unlock()
        if own_stop:
            stop.restore()


def _train(config, comm, stream, stop, run_dir):
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.data.splits import choose_splits, single_class_warning
    info = open_dataset(config.data.path, comm=comm, check_finite=config.data.check_finite)
    splits, infos = choose_splits(config.data, info, comm, config.data.check_finite)
    warning = single_class_warning(splits["val"], infos["val"], comm)
    take_run_dir(config, run_dir, comm)
    writer = Writer(None, active=run_dir.writes, progress=config.train.progress, stream=stream)
    if "train" in info.splits and config.data.split != "chronological" and not config.data.val_path:
        writer.say(f"note: {info.path} has split attributes, they are used (data.split = {config.data.split} "
                   "applies to files without them)")
    if warning:
        writer.say(warning)
    trainer = Trainer(config, comm, info, splits, run_dir, writer, val_info=infos["val"])
    trainer.placement = check_placement(comm, config.data.prefetch, writer.say, trainer.model.threads)
    pinned = blas_warning()
    if pinned:
        writer.say(pinned)
    resumed_from = resume(trainer, config, comm, writer)
    run_dir.write_config(to_toml(config))          # only once the run is accepted
    run_dir.trim_metrics(trainer.step)             # the steps after the checkpoint will be run again
    writer.open_metrics(run_dir.metrics if run_dir.writes else None)
    writer.say(f"training {config.model.cell} (hidden {config.model.hidden_size}, layers {config.model.num_layers}, "
               f"{trainer.model.num_params} parameters) on {info.path}: {len(splits['train'])} "
               f"train samples, {comm.size} rank(s), {trainer.steps_per_epoch} steps/epoch"
               + (f", resumed from {resumed_from}" if resumed_from else ""))
    if info.stamp_note:
        writer.say(f"note: {info.path}: {info.stamp_note}; its values are checked batch by batch "
                   f"(hpcrnn check --stamp {info.path} checks them once)")
    clock = PhaseClock()
    try:
        summary = trainer.run(stop)
    except ckpt.Preempted as preempted:
        record(run_dir, trainer, clock, resumed_from, "preempted", checkpoint=preempted.path)
        raise
    except Exception as error:
        record(run_dir, trainer, clock, resumed_from, "failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        writer.close()
    summary.update(state="done", resumed_from=resumed_from, checkpoint=trainer.last_checkpoint)
    run_dir.write_summary(summary)
    return summary


def record(run_dir, trainer, clock, resumed_from, state, **extra):
    """Writes summary.json for a run that did not finish (rank 0; never hides the original error)."""
    clock.lap("wall")
    try:
        run_dir.write_summary({**trainer.summary(clock.times["wall"]), "state": state,
                               "resumed_from": resumed_from, "checkpoint": trainer.last_checkpoint, **extra})
    except OSError:
        pass


def take_run_dir(config, run_dir, comm):
    """Creates and locks the run directory; a new run (resume = never) must not append to another run's
    metrics or checkpoints. Every rank raises the same ConfigError when the directory is refused."""
    error = None
    if run_dir.writes:
        try:
            run_dir.create()
            error = run_dir.lock()
        except OSError as exc:
            error = f"run directory {config.run_dir}: cannot be used ({exc.strerror or exc})"
    if run_dir.writes and not error and config.checkpoint.resume == "never":
        held = run_dir.held_run()
        if held:
            error = (f"run directory {config.run_dir} already holds a run ({', '.join(held)}): continue it with "
                     "--resume auto, or choose another --run-dir")
    mpi.agree(comm, error, ConfigError)


def resume(trainer, config, comm, writer):
    """Restores the trainer from a checkpoint per checkpoint.resume (never | auto | PATH); rank 0 reads,
    everyone gets the same state by broadcast. Returns the path used or None."""
    mode = config.checkpoint.resume
    if mode == "never":
        return None
    if mode == "auto":
        found = ckpt.load_shared(comm, lambda: ckpt.load_latest(trainer.run_dir.checkpoints, warn=writer.say))
    else:
        found = ckpt.load_shared(comm, lambda: (mode, *ckpt.load(mode)))
    if found is None:
        return None
    path, arrays, meta = found
    if {**trainer.model.META_DEFAULTS, **meta["model"]} != trainer.model_meta():
        raise ckpt.CheckpointError(f"{path}: checkpoint model {meta['model']} does not match the config")
    trainer.restore(arrays, meta)
    trainer.last_checkpoint = path
    return path
