"""The data-parallel training loop: batch, forward+backward, one fused Allreduce, update, log, checkpoint."""
import math
import os
import signal
import time

import numpy as np

from hpcrnn import checkpoint as ckpt
from hpcrnn import comm as mpi
from hpcrnn.config import to_toml
from hpcrnn.errors import HpcrnnError
from hpcrnn.evaluate import evaluate_split, resolve_loss
from hpcrnn.log import Writer
from hpcrnn.optim import clip_factor, learning_rate, make_optimizer
from hpcrnn.runinfo import versions

PREEMPTED_EXIT = 75          # checkpoint written after SIGUSR1/SIGTERM: requeue me
EXTRAS = 4                   # fused buffer tail: loss sum, sample count, non-finite flag, stop flag


class Preempted(Exception):
    """Training stopped at a step boundary after a preemption signal; a checkpoint was written."""

    def __init__(self, step, path):
        super().__init__(f"preempted at step {step}; checkpoint {path}")
        self.step, self.path = step, path


class TrainingError(HpcrnnError):
    """Training cannot go on (a non-finite loss with train.nonfinite = 'stop'); every rank raises it together."""


class StopSignal:
    """Remembers SIGUSR1/SIGTERM; the loop reduces the flag so all ranks stop at the same step."""

    def __init__(self):
        self.received = 0
        self._old = {}

    def install(self):
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def build_model(config, info, seed):
    from hpcrnn.model import Model
    head = info.head
    output_size = info.num_classes if info.task == "classification" else info.output_size
    return Model(cell=config.model.cell, input_size=info.num_features, hidden_size=config.model.hidden_size,
                 num_layers=config.model.num_layers, output_size=output_size, head=head,
                 dtype=np.dtype(config.model.dtype).type, seed=seed)


def model_meta(model, loss):
    return {"cell": model.cell, "input_size": model.input_size, "hidden_size": model.hidden_size,
            "num_layers": model.num_layers, "output_size": model.output_size, "head": model.head,
            "dtype": np.dtype(model.dtype).name, "loss": loss}


class Trainer:
    """Holds the state of one run; `run()` trains to the end (or to a preemption) and returns a summary."""

    def __init__(self, config, comm, info, splits, writer=None):
        from hpcrnn.data.loader import BatchLoader
        self.config, self.comm, self.info, self.splits = config, comm, info, splits
        self.writer = writer or Writer(None, active=False)
        self.loss = resolve_loss(config.model.loss, info)
        self.model = build_model(config, info, config.train.seed)
        mpi.bcast_array(comm, self.model.params)
        self.optimizer = make_optimizer(config.optim, self.model.params)
        self.buffer, self.grad, self.extras = mpi.fused_buffer(self.model.num_params, EXTRAS, self.model.dtype)
        d = config.data
        self.loader = BatchLoader(info, split=splits["train"], global_batch=config.train.batch_size, comm=comm,
                                  seed=config.train.seed, shuffle=d.shuffle, buffer_mb=d.buffer_mb,
                                  prefetch=d.prefetch, dtype=self.model.dtype, reads=d.reads)
        self.steps_per_epoch = self.loader.steps_per_epoch
        total = self.steps_per_epoch * config.train.epochs
        self.total_steps = min(total, config.train.max_steps) if config.train.max_steps else total
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.ckpt_dir = os.path.join(config.run_dir, "checkpoints")
        self.totals = {"t_compute": 0.0, "t_comm": 0.0, "t_io": 0.0, "t_step": 0.0}
        self.last_loss, self.skipped = float("nan"), 0

    # ---- one step -----------------------------------------------------------------------------
    def train_step(self, batch, stop_flag):
        c, model = self.config, self.model
        t0 = time.perf_counter()
        self.buffer[:] = 0
        if c.train.overlap and self.comm.size > 1:
            t1 = self.overlapped_exchange(batch, stop_flag)
        else:
            loss_sum = model.forward_backward(batch.x, batch.y, self.grad, loss=self.loss, lengths=batch.lengths)
            self.extras[:] = (loss_sum, len(batch.x), 0.0 if math.isfinite(loss_sum) else 1.0, stop_flag)
            t1 = time.perf_counter()
            mpi.allreduce_sum(self.comm, self.buffer, c.train.comm_timeout_s)
        t2 = time.perf_counter() if self.comm.size > 1 else t1   # one rank: nothing is communicated
        t_comm = t2 - t1
        count = max(float(self.extras[1]), 1.0)
        sq_norm = float(np.dot(self.grad, self.grad)) / (count * count)   # the gradient is grad / count
        loss = float(self.extras[0]) / count
        lr = learning_rate(self.step, c.optim.lr, self.total_steps, c.schedule.name, c.schedule.warmup_steps,
                           c.schedule.step_size, c.schedule.gamma, c.schedule.min_lr)
        finite = self.extras[2] == 0 and math.isfinite(sq_norm)
        if finite:
            scale = clip_factor(sq_norm, c.optim.clip_norm) / count
            self.optimizer.step(model.params, self.grad, lr, scale)
        elif c.train.nonfinite == "stop":
            raise TrainingError(f"non-finite loss or gradient at step {self.step + 1} (train.nonfinite = 'stop'); "
                                f"the last checkpoint is kept")
        else:
            self.skipped += 1
        t3 = time.perf_counter()
        t_io = batch.t_io
        t_step = t3 - t0 + t_io
        record = {"step": self.step + 1, "epoch": self.epoch, "loss": loss, "lr": lr,
                  "grad_norm": math.sqrt(sq_norm) if finite else float("nan"),
                  "samples_per_s": batch.global_count / t_step if t_step > 0 else 0.0,
                  "t_compute": (t1 - t0) + (t3 - t2), "t_comm": t_comm, "t_io": t_io, "t_step": t_step}
        if not finite:
            record["skipped"] = True
        return record, bool(self.extras[3] > 0)

    def overlapped_exchange(self, batch, stop_flag):
        """BPTT with each layer's gradient slice reduced (non-blocking) as soon as it is complete, top layer
        first; then the tail (head gradients + extras). Every rank posts the same reductions in the same
        order, also a rank with an empty batch. Returns the time BPTT ended (the rest is waiting)."""
        model, posted = self.model, []

        def post(layer):
            start, stop = model.layer_span(layer)
            posted.append(mpi.start_allreduce(self.comm, self.buffer[start:stop]))

        loss_sum = model.forward_backward(batch.x, batch.y, self.grad, loss=self.loss, lengths=batch.lengths,
                                          on_layer_done=post)
        for layer in range(model.num_layers - 1 - len(posted), -1, -1):
            post(layer)
        self.extras[:] = (loss_sum, len(batch.x), 0.0 if math.isfinite(loss_sum) else 1.0, stop_flag)
        t_end = time.perf_counter()
        posted.append(mpi.start_allreduce(self.comm, self.buffer[model.layer_span(model.num_layers - 1)[1]:]))
        mpi.wait(self.comm, posted, self.config.train.comm_timeout_s, "gradient allreduce")
        return t_end

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, stop=None):
        stop = stop or StopSignal()
        t_start = time.perf_counter()
        try:
            self.run_epochs(stop)
        finally:
            self.loader.close()
        return self.summary(time.perf_counter() - t_start)

    def run_epochs(self, stop):
        c, w = self.config, self.writer
        while self.epoch < c.train.epochs and self.step < self.total_steps:
            batches = self.loader.epoch(self.epoch, start_step=self.step_in_epoch)
            try:
                for batch in batches:
                    record, stop_now = self.train_step(batch, float(stop.received != 0))
                    self.step += 1
                    self.step_in_epoch += 1
                    self.last_loss = record["loss"]
                    for key in self.totals:
                        self.totals[key] += record[key]
                    w.metrics(record)
                    w.progress(self.step_in_epoch, self.steps_per_epoch, self.epoch, record, c.train.log_every)
                    if stop_now:
                        raise Preempted(self.step, self.save_checkpoint())
                    if c.checkpoint.every_steps and self.step % c.checkpoint.every_steps == 0:
                        self.save_checkpoint()
                    if self.step >= self.total_steps:
                        break
            finally:
                batches.close()
            self.end_epoch()

    def end_epoch(self):
        c = self.config
        epoch_done = self.step_in_epoch >= self.steps_per_epoch
        if epoch_done:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.log_eval()
        if epoch_done and c.checkpoint.every_epochs and self.epoch % c.checkpoint.every_epochs == 0:
            self.save_checkpoint()

    def log_eval(self):
        if self.splits["val"][1] <= self.splits["val"][0]:
            return
        metrics = evaluate_split(self.model, self.info, self.splits["val"], self.loss, self.comm,
                                 self.config.train.batch_size, self.config.data.reads)
        record = {"event": "eval", "split": "val", "step": self.step, "epoch": self.epoch, **metrics}
        self.writer.metrics(record)
        self.writer.say("eval " + " ".join(f"{k} {v:.5g}" for k, v in metrics.items() if k != "count"))
        self.last_eval = metrics

    # ---- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self):
        """Rank 0 writes after every rank finished the step (the step's Allreduce proves it); all ranks
        learn whether it worked, so none waits on a failed writer."""
        path = ckpt.path_for(self.ckpt_dir, self.step)
        error = None
        if self.comm.rank == 0:
            try:
                os.makedirs(self.ckpt_dir, exist_ok=True)
                ckpt.save(path, self.checkpoint_arrays(), self.checkpoint_meta())
                ckpt.prune(self.ckpt_dir, self.config.checkpoint.keep)
            except OSError as exc:
                error = f"checkpoint {path} not written ({exc}); the previous one is kept"
        error = mpi.agree_error(self.comm, error)
        if error:
            self.writer.say(f"warning: {error}")
            return None
        return path

    def checkpoint_arrays(self):
        arrays = {f"params/{k}": v for k, v in self.model.unflatten(self.model.params).items()}
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.state_arrays().items()})
        return arrays

    def checkpoint_meta(self):
        return {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "optimizer_steps": self.optimizer.steps, "skipped": self.skipped, "last_loss": self.last_loss,
                "world_size": self.comm.size, "model": model_meta(self.model, self.loss),
                "config_toml": to_toml(self.config), "data_path": self.info.path, "versions": versions(),
                "rng": {"seed": self.config.train.seed, "epoch": self.epoch}}

    def restore(self, arrays, meta):
        params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
        self.model.load_state_dict(params)
        optim = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
        self.optimizer.load_state(optim, meta["optimizer_steps"])
        self.step, self.epoch, self.step_in_epoch = meta["step"], meta["epoch"], meta["step_in_epoch"]
        self.skipped, self.last_loss = meta["skipped"], meta["last_loss"]

    def summary(self, wall):
        return {"final_loss": self.last_loss, "steps": self.step, "epochs": self.epoch, "skipped_steps": self.skipped,
                "ranks": self.comm.size, "wall_s": wall, **{f"total_{k}": v for k, v in self.totals.items()},
                "final_eval": getattr(self, "last_eval", None), "threads": thread_counts(), "versions": versions()}


def thread_counts():
    import numba
    return {"numba": numba.get_num_threads(), "blas": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0)}
