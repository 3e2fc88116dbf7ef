"""Early stopping under mpiexec: every rank takes rank 0's decision (even if a rank computed another value of
the monitored metric), stops at the same step as one rank would, and best.h5 is written once."""
import os

import pytest
from mpi4py import MPI

from hpcrnn import checkpoint as ckpt
from hpcrnn.config import load_config
from hpcrnn.run import train
from helpers import write_windows

WORLD = MPI.COMM_WORLD


def config(data, run_dir, **values):
    base = {"data.path": data, "run_dir": run_dir, "model.cell": "gru", "model.hidden_size": 4,
            "train.batch_size": 8, "train.epochs": 8, "train.progress": "none", "data.val_fraction": 0.25,
            "model.dtype": "float64", "train.comm_timeout_s": 30.0, "train.early_stopping_patience": 2}
    return load_config(None, [], {**base, **values})


@pytest.fixture
def data(shared_dir):
    path = os.path.join(shared_dir, "d.h5")
    if WORLD.rank == 0:
        write_windows(path, n=47)          # 36 train samples (5 steps an epoch), 11 val: uneven over ranks
    WORLD.Barrier()
    return path


def test_stop_matches_one_rank(shared_dir, data):
    """min_delta 1e9: the first evaluation is the best, training stops after the 3rd (step 15)."""
    values = {"train.early_stopping_min_delta": 1e9}
    parallel = train(config(data, os.path.join(shared_dir, "par"), **values), WORLD)
    serial = train(config(data, os.path.join(shared_dir, f"ser{WORLD.rank}"), **values), MPI.COMM_SELF)
    for run in (parallel, serial):
        assert (run["steps"], run["stopped_early"], run["best"]["step"]) == (15, True, 5)
    assert parallel["best"]["value"] == pytest.approx(serial["best"]["value"], rel=1e-12)
    assert WORLD.allgather((parallel["steps"], parallel["best"])) == [(15, parallel["best"])] * WORLD.size
    WORLD.Barrier()
    assert ckpt.load(os.path.join(shared_dir, "par", "checkpoints", "best.h5"))[1]["step"] == 5


def test_every_rank_follows_rank_0s_value(shared_dir, data, monkeypatch):
    """Ranks other than 0 see a val loss that only gets worse (alone they would stop at step 15); rank 0
    sees one that improves: all ranks train on to the end (a rank stopping alone would leave the others in
    the next step's Allreduce until the stall inspector aborts the job, after train.comm_timeout_s)."""
    import hpcrnn.train as train_module
    original = train_module.evaluate_split
    calls = []

    def skewed(*args, **kwargs):
        metrics = original(*args, **kwargs)
        calls.append(1)
        return {**metrics, "loss": 1.0 / len(calls) if WORLD.rank == 0 else float(len(calls))}
    monkeypatch.setattr(train_module, "evaluate_split", skewed)
    run = train(config(data, os.path.join(shared_dir, "skewed")), WORLD)
    assert (run["steps"], run["stopped_early"], run["best"]) == (40, False, {
        "step": 40, "epoch": 8, "metric": "val_loss", "value": 1.0 / 8})
    assert WORLD.allgather(run["best"]) == [run["best"]] * WORLD.size
    WORLD.Barrier()
    meta = ckpt.load(os.path.join(shared_dir, "skewed", "checkpoints", "best.h5"))[1]
    assert meta["step"] == 40 and meta["early_stopping"]["bad_evals"] == 0
