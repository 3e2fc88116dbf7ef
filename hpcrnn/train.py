"""The data-parallel training loop: batch, forward+backward, one fused Allreduce, update, log, checkpoint."""
import math
import os

import numpy as np

from hpcrnn import checkpoint as ckpt
from hpcrnn import comm as mpi
from hpcrnn.config import to_toml
from hpcrnn.errors import DataError, HpcrnnError
from hpcrnn.evaluate import evaluate_split, resolve_loss
from hpcrnn.log import PhaseClock, Writer
from hpcrnn.monitor import Monitor, check_monitor
from hpcrnn.optim import clip_factor, learning_rate, make_optimizer
from hpcrnn.process import StopSignal
from hpcrnn.runinfo import versions

PHASES = ("t_compute", "t_comm", "t_io", "t_step")
RANK_PHASES = ("t_compute", "t_comm", "t_io")   # per-rank totals in summary.json ("wait" is t_comm)
IMBALANCE_WARN = 0.20   # rank 0 warns when a rank's compute over an epoch is this much above the median


class TrainingError(HpcrnnError):
    """Training cannot go on (a non-finite loss with train.nonfinite = 'stop'); every rank raises it together."""


def build_model(config, info):
    """The model the config asks for, shaped for the data file `info` describes."""
    from hpcrnn.model import Model
    from hpcrnn.process import cores_per_rank
    classes = info.task == "classification"
    return Model(cell=config.model.cell, input_size=info.num_features, hidden_size=config.model.hidden_size,
                 num_layers=config.model.num_layers, output_size=info.num_classes if classes else info.output_size,
                 head=info.head, dtype=np.dtype(config.model.dtype).type, seed=config.train.seed,
                 dropout=config.model.dropout, bidirectional=config.model.bidirectional,
                 threads=cores_per_rank(config))


class Trainer:
    """Holds the state of one run; `run()` trains to the end (or to a preemption) and returns a summary."""

    def __init__(self, config, comm, info, splits, run_dir, writer=None, val_info=None):
        """splits: {name: (start, stop) or data.splits.Split} of the file `info` describes; the val split's
        samples are those of val_info's file when given (data.val_path)."""
        from hpcrnn.data.loader import BatchLoader
        from hpcrnn.data.splits import as_split
        splits = {name: as_split(split) for name, split in splits.items()}
        self.config, self.comm, self.info, self.splits, self.run_dir = config, comm, info, splits, run_dir
        self.val_info = val_info or info
        t = config.train
        check_monitor(t.monitor, t.early_stopping_patience, info, len(splits["val"]) > 0)
        self.monitor = Monitor(t.monitor, t.early_stopping_patience, t.early_stopping_min_delta)
        self.writer = writer or Writer(None, active=False)
        self.loss = resolve_loss(config.model.loss, info)
        self.model = build_model(config, info)
        mpi.bcast_array(comm, self.model.params)
        self.optimizer = make_optimizer(config.optim, self.model.params)
        spans = [self.model.layer_span(layer) for layer in range(self.model.num_layers)]
        self.exchange = mpi.FusedExchange(comm, self.model.num_params, self.model.dtype, spans,
                                          config.train.comm_timeout_s, config.train.overlap)
        d = config.data
        self.loader = BatchLoader(info, split=splits["train"], global_batch=config.train.batch_size, comm=comm,
                                  seed=config.train.seed, shuffle=d.shuffle, buffer_mb=d.buffer_mb,
                                  prefetch=d.prefetch, dtype=self.model.dtype, reads=d.reads)
        self.steps_per_epoch = self.loader.steps_per_epoch
        total = self.steps_per_epoch * config.train.epochs
        self.total_steps = min(total, config.train.max_steps) if config.train.max_steps else total
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.epoch_compute = np.zeros(comm.size)          # every rank's compute this epoch (from the tail)
        self.per_rank, self.placement = None, None        # per-rank totals (end of run); run.py sets placement
        self.last_loss, self.skipped, self.last_eval = float("nan"), 0, None
        self.last_checkpoint, self.failed_checkpoints = None, 0

    # ---- one step -----------------------------------------------------------------------------
    def train_step(self, batch, stop_requested):
        """Forward+backward on this rank's share, the fused Allreduce, the update; returns (record, stop)."""
        clock = PhaseClock()
        self.exchange.start()
        on_layer_done = self.exchange.layer_done if self.exchange.overlap else None
        loss_sum, count = 0.0, 0            # a bad batch is not computed: its flag travels in the exchange
        if batch.problem is None:
            count = len(batch.x)
            loss_sum = self.model.forward_backward(batch.x, batch.y, self.exchange.grad, loss=self.loss,
                                                   lengths=batch.lengths, on_layer_done=on_layer_done,
                                                   step=self.step, sample_indices=batch.indices)
        clock.lap("t_compute")
        totals = self.exchange.finish(loss_sum, count, stop_requested, clock.times["t_compute"],
                                      bad_batch=batch.problem is not None)
        if totals.bad:                      # every rank learns the first rank's message and raises it
            mpi.agree(self.comm, batch.problem, DataError)
        clock.lap("t_comm" if self.comm.size > 1 else "t_compute")
        self.epoch_compute += totals.compute
        lr, grad_norm = self.update(totals)
        clock.lap("t_compute")
        return self.step_record(batch, totals, lr, grad_norm, clock.times), totals.stop

    def update(self, totals):
        """Clips and applies the mean gradient (grad / count, folded into the optimizer's scale), or applies
        the non-finite policy. Returns (learning rate, gradient norm or NaN when skipped)."""
        c, count = self.config, max(totals.count, 1.0)
        grad = self.exchange.grad
        sq_norm = float(np.dot(grad, grad)) / (count * count)
        lr = learning_rate(self.step, c.optim.lr, self.total_steps, c.schedule.name, c.schedule.warmup_steps,
                           c.schedule.step_size, c.schedule.gamma, c.schedule.min_lr)
        if not totals.nonfinite and math.isfinite(sq_norm):
            self.optimizer.step(self.model.params, grad, lr, clip_factor(sq_norm, c.optim.clip_norm) / count)
            return lr, math.sqrt(sq_norm)
        if c.train.nonfinite == "stop":
            raise TrainingError(f"non-finite loss or gradient at step {self.step + 1} (train.nonfinite = 'stop'); "
                                f"the last checkpoint is kept")
        self.skipped += 1
        return lr, float("nan")

    def step_record(self, batch, totals, lr, grad_norm, times):
        """The metrics.jsonl record of a step (global loss; this rank's phase times)."""
        t_step = sum(times.values()) + batch.t_io
        record = {"step": self.step + 1, "epoch": self.epoch, "loss": totals.loss_sum / max(totals.count, 1.0),
                  "lr": lr, "grad_norm": grad_norm,
                  "samples_per_s": batch.global_count / t_step if t_step > 0 else 0.0,
                  "t_compute": times.get("t_compute", 0.0), "t_comm": times.get("t_comm", 0.0),
                  "t_io": batch.t_io, "t_step": t_step, "t_compute_max": totals.compute_max,
                  "t_compute_median": totals.compute_median, "slowest_rank": totals.slowest_rank}
        if math.isnan(grad_norm):
            record["skipped"] = True
        return record

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, stop=None):
        stop = stop or StopSignal()
        clock = PhaseClock()
        try:
            try:
                self.run_epochs(stop)
            finally:
                self.loader.close()
        except ckpt.Preempted:
            self.gather_rank_totals()               # every rank stops at the same step (the reduced flag)
            raise
        self.gather_rank_totals()
        if self.last_checkpoint != self.run_dir.checkpoint_for(self.step):
            self.save_checkpoint(final=True)        # the final model, whatever the schedule
        clock.lap("wall")
        return self.summary(clock.times["wall"])

    def run_epochs(self, stop):
        c, w = self.config, self.writer
        while self.epoch < c.train.epochs and self.step < self.total_steps and not self.monitor.stop:
            batches = self.loader.epoch(self.epoch, start_step=self.step_in_epoch)
            try:
                for batch in batches:
                    record, stop_now = self.train_step(batch, stop.received != 0)
                    self.step += 1
                    self.step_in_epoch += 1
                    self.last_loss = record["loss"]
                    for key in PHASES:
                        self.totals[key] += record[key]
                    w.metrics(record)
                    w.progress(self.step_in_epoch, self.steps_per_epoch, self.epoch, record, c.train.log_every)
                    if stop_now:
                        raise ckpt.Preempted(self.step, self.save_checkpoint(final=True))
                    if c.checkpoint.every_steps and self.step % c.checkpoint.every_steps == 0:
                        self.save_checkpoint()
                    if self.step >= self.total_steps:
                        break
            finally:
                batches.close()
            self.end_epoch()

    def end_epoch(self):
        c = self.config
        self.warn_imbalance()
        epoch_done = self.step_in_epoch >= self.steps_per_epoch
        if epoch_done:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self.log_eval() and c.checkpoint.keep_best:
            self.save_checkpoint(best=True)
        if epoch_done and c.checkpoint.every_epochs and self.epoch % c.checkpoint.every_epochs == 0:
            self.save_checkpoint()
        m = self.monitor
        if m.stop and self.step < self.total_steps and self.epoch < c.train.epochs:
            self.writer.say(f"early stopping at step {self.step}: {m.metric} has not improved by more than "
                            f"{m.min_delta:g} in {m.bad_evals} evaluations (best {m.best_value:.5g} at step "
                            f"{m.best_step})")

    def warn_imbalance(self):
        """Rank 0 warns when one rank's compute over the epoch (so far) is > IMBALANCE_WARN above the median
        rank's; every rank knows every rank's compute from the exchange's tail."""
        times, self.epoch_compute = self.epoch_compute, np.zeros(self.comm.size)
        longest, slowest, median = mpi.compute_statistics(times)
        if self.comm.size > 1 and median > 0 and longest > (1 + IMBALANCE_WARN) * median:
            self.writer.say(f"warning: rank {slowest} computed {100 * (longest / median - 1):.0f}% longer "
                            f"than the median rank in epoch {self.epoch} ({longest:.3g} s vs {median:.3g} s): "
                            f"the other ranks wait for it at every Allreduce (a slow or shared core? see "
                            f"summary.json's per_rank and docs/throughput.md)")

    def gather_rank_totals(self):
        """Collective: every rank's totals of compute, wait (t_comm) and I/O into self.per_rank."""
        rows = mpi.allgather_array(self.comm, [self.totals[key] for key in RANK_PHASES])
        self.per_rank = [{"rank": rank, **{f"total_{key}": float(v) for key, v in zip(RANK_PHASES, row)}}
                         for rank, row in enumerate(rows)]

    def log_eval(self):
        """Evaluates on the val split (metrics reduced over all ranks) and updates the monitor with rank 0's
        value of the monitored metric, so every rank takes the same decision. Returns whether it improved."""
        if len(self.splits["val"]) == 0:
            return False
        metrics = evaluate_split(self.model, self.val_info, self.splits["val"], self.loss, self.comm,
                                 self.config.train.batch_size, self.config.data.reads)
        value = mpi.bcast_object(self.comm, self.monitor.value_of(metrics))
        improved = self.monitor.update(value, self.step, self.epoch)
        record = {"event": "eval", "split": "val", "step": self.step, "epoch": self.epoch, **metrics}
        self.writer.metrics(record)
        self.writer.say("eval " + " ".join(f"{k} {v:.5g}" for k, v in metrics.items() if k != "count")
                        + (" (best)" if improved else ""))
        self.last_eval = metrics
        return improved

    # ---- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, final=False, best=False):
        """Rank 0 writes after every rank finished the step (the step's Allreduce proves it); all ranks
        learn whether it worked, so none waits on a failed writer. A checkpoint that cannot be written is a
        warning, but the final one (end of training, preemption) and checkpoint.max_failures failures in a
        row end the run with a CheckpointError on every rank. best=True writes checkpoints/best.h5 (the same
        contents, atomically; retention never removes it). Returns the path written."""
        path = self.run_dir.best_checkpoint if best else self.run_dir.checkpoint_for(self.step)
        error = None
        if self.comm.rank == 0:
            try:
                os.makedirs(self.run_dir.checkpoints, exist_ok=True)
                arrays = ckpt.pack(self.model.state_dict(), self.optimizer.state_arrays())
                ckpt.save(path, arrays, self.checkpoint_meta())
                if not best:
                    ckpt.prune(self.run_dir.checkpoints, self.config.checkpoint.keep)
            except OSError as exc:
                error = f"checkpoint {path} not written ({exc.strerror or exc})"
        error = mpi.agree_error(self.comm, error)
        if not error:
            self.failed_checkpoints = 0
            if not best:
                self.last_checkpoint = path
            return path
        self.failed_checkpoints += 1
        kept = f"the newest is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint of this run exists"
        limit = self.config.checkpoint.max_failures
        if final or self.failed_checkpoints >= limit:
            why = "the final checkpoint" if final else f"{self.failed_checkpoints} checkpoints in a row"
            raise ckpt.CheckpointError(f"{why} could not be written: {error}; {kept}")
        self.writer.say(f"warning: {error}; {kept} ({self.failed_checkpoints} of {limit} failures allowed in a row)")
        return None

    def model_meta(self):
        """What a checkpoint records of the model (Model.meta() plus the loss it was trained with)."""
        return {**self.model.meta(), "loss": self.loss}

    def checkpoint_meta(self):
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "optimizer_steps": self.optimizer.steps, "skipped": self.skipped, "last_loss": self.last_loss,
                "world_size": self.comm.size, "model": self.model_meta(), "early_stopping": self.monitor.state(),
                "config_toml": to_toml(self.config), "data_path": self.info.path, "versions": versions(),
                "rng": {"seed": self.config.train.seed, "epoch": self.epoch}}

    def restore(self, arrays, meta):
        params, optimizer_state = ckpt.unpack(arrays)
        self.model.load_state_dict(params)
        self.optimizer.load_state(optimizer_state, meta["optimizer_steps"])
        self.step, self.epoch, self.step_in_epoch = meta["step"], meta["epoch"], meta["step_in_epoch"]
        self.skipped, self.last_loss = meta["skipped"], meta["last_loss"]
        self.monitor.load_state(meta.get("early_stopping"))

    def summary(self, wall):
        return {"final_loss": self.last_loss, "steps": self.step, "epochs": self.epoch, "skipped_steps": self.skipped,
                "ranks": self.comm.size, "wall_s": wall, **{f"total_{k}": v for k, v in self.totals.items()},
                "final_eval": self.last_eval, "best": self.monitor.best(), "stopped_early": self.stopped_early(),
                "threads": thread_counts(), "versions": versions(), "per_rank": self.rank_records()}

    def rank_records(self):
        """Per rank: host and CPU affinity (run.py's placement check) and the totals of compute, wait and I/O
        (gathered at the end of the run; this rank's own only when the run failed before that)."""
        placement = self.placement or [{"rank": r} for r in range(self.comm.size)]
        totals = self.per_rank or [{"rank": self.comm.rank, **{f"total_{k}": self.totals[k] for k in RANK_PHASES}}]
        by_rank = {t["rank"]: t for t in totals}
        return [{**p, **by_rank.get(p["rank"], {})} for p in placement]

    def stopped_early(self):
        """True when early stopping ended training before its planned end (epochs, max_steps)."""
        return self.monitor.stop and self.step < self.total_steps and self.epoch < self.config.train.epochs


def thread_counts():
    import numba

    from hpcrnn.placement import blas_threads
    return {"numba": numba.get_num_threads(), "blas": blas_threads()}
