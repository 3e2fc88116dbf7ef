"""Data parallelism: P ranks reproduce 1 rank (loss curve, final parameters), identical parameters on every
rank, tiny datasets, agreed errors. Run under `mpiexec -n 2` and `-n 3`; each rank also trains serially on
COMM_SELF as the reference, so the comparison happens inside one job."""
import json
import os

import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn.config import load_config
from hpcrnn.errors import HpcrnnError
from hpcrnn.run import train
from helpers import write_windows

WORLD = MPI.COMM_WORLD


def config_for(data, run_dir, dtype, **extra):
    sets = [f"data.path={data}", f"run_dir={run_dir}", f"model.dtype={dtype}", "model.cell=lstm",
            "model.hidden_size=8", "model.num_layers=2", "train.epochs=2", "train.batch_size=10",
            "train.progress=none", "optim.name=adam", "optim.lr=0.01", "data.val_fraction=0.2",
            "data.buffer_mb=0.01", "checkpoint.every_epochs=1"]
    return load_config(None, sets + [f"{k}={v}" for k, v in extra.items()])


def final_params(run_dir):
    from hpcrnn.checkpoint import list_checkpoints, load
    arrays, meta = load(list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])
    return {k: v for k, v in arrays.items() if k.startswith("params/")}, meta


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [r["loss"] for r in map(json.loads, handle) if "event" not in r]


def evals(run_dir):
    """(step, val loss, rmse, count) of each eval line."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [(r["step"], r["loss"], r["rmse"], r["count"]) for r in map(json.loads, handle)
                if r.get("event") == "eval"]


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("n", [47, 5])   # 5 samples: fewer than P x batch, some ranks get nothing
def test_parallel_matches_serial(shared_dir, dtype, rtol, n):
    data = os.path.join(shared_dir, f"d{n}.h5")
    if WORLD.rank == 0:
        write_windows(data, n=n)
    WORLD.Barrier()
    parallel_dir = os.path.join(shared_dir, f"par-{dtype}-{n}")
    serial_dir = os.path.join(shared_dir, f"ser-{dtype}-{n}-rank{WORLD.rank}")
    summary = train(config_for(data, parallel_dir, dtype, **({"data.val_fraction": 0} if n < 10 else {})), WORLD)
    train(config_for(data, serial_dir, dtype, **({"data.val_fraction": 0} if n < 10 else {})), MPI.COMM_SELF)
    assert summary["ranks"] == WORLD.size
    WORLD.Barrier()
    par, meta = final_params(parallel_dir)
    ser, _ = final_params(serial_dir)
    assert meta["world_size"] == WORLD.size
    assert meta["step"] > 0
    for key in ser:
        np.testing.assert_allclose(par[key], ser[key], rtol=rtol, atol=rtol * 1e-2, err_msg=key)
    np.testing.assert_allclose(losses(parallel_dir), losses(serial_dir), rtol=rtol * 10)
    par_evals, ser_evals = evals(parallel_dir), evals(serial_dir)   # 47 samples: 9 val, uneven over 2 ranks
    assert len(par_evals) == (2 if n >= 10 else 0)
    assert [(e[0], e[3]) for e in par_evals] == [(e[0], e[3]) for e in ser_evals]
    np.testing.assert_allclose([e[1:3] for e in par_evals], [e[1:3] for e in ser_evals], rtol=rtol * 10)


def test_parameters_identical_on_every_rank(shared_dir):
    data = os.path.join(shared_dir, "d.h5")
    if WORLD.rank == 0:
        write_windows(data, n=33)
    WORLD.Barrier()
    from hpcrnn.train import Trainer
    from hpcrnn.data.splits import split_ranges
    from hpcrnn.data.schema import open_dataset
    from hpcrnn.rundir import RunDir
    config = config_for(data, os.path.join(shared_dir, "same"), "float32")
    info = open_dataset(data, comm=WORLD)
    trainer = Trainer(config, WORLD, info, split_ranges(info, 0.2), RunDir(config.run_dir, writes=WORLD.rank == 0))
    trainer.run()
    everyone = WORLD.allgather(trainer.model.params.tobytes())
    assert all(p == everyone[0] for p in everyone)


def test_missing_file_is_an_error_on_every_rank(shared_dir):
    config = config_for(os.path.join(shared_dir, "absent.h5"), os.path.join(shared_dir, "x"), "float32")
    with pytest.raises(HpcrnnError, match="absent.h5"):
        train(config, WORLD)


@pytest.mark.parametrize("n", [47, 2])    # 2 samples: some ranks reduce with an empty batch
def test_overlapped_exchange_matches_fused(shared_dir, n):
    data = os.path.join(shared_dir, f"o{n}.h5")
    if WORLD.rank == 0:
        write_windows(data, n=n)
    WORLD.Barrier()
    runs = {}
    for overlap in (False, True):
        run_dir = os.path.join(shared_dir, f"overlap-{overlap}-{n}")
        train(config_for(data, run_dir, "float64", **{"train.overlap": overlap, "data.val_fraction": 0}), WORLD)
        runs[overlap] = final_params(run_dir)[0]
    for key in runs[False]:
        np.testing.assert_allclose(runs[True][key], runs[False][key], rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.fixture
def nan_on_rank_last(monkeypatch):
    """Rank size-1 (rank 0 when serial) returns a NaN loss at its 3rd forward/backward."""
    import hpcrnn.model
    calls, original = [0], hpcrnn.model.Model.forward_backward

    def patched(self, *args, **kw):
        calls[0] += 1
        out = original(self, *args, **kw)
        return float("nan") if WORLD.rank == WORLD.size - 1 and calls[0] == 3 else out
    monkeypatch.setattr(hpcrnn.model.Model, "forward_backward", patched)


def test_nonfinite_skip_is_the_same_decision_everywhere(shared_dir, nan_on_rank_last):
    data = os.path.join(shared_dir, "nf.h5")
    if WORLD.rank == 0:
        write_windows(data, n=40)
    WORLD.Barrier()
    run_dir = os.path.join(shared_dir, "nf-skip")
    summary = train(config_for(data, run_dir, "float32", **{"data.val_fraction": 0}), WORLD)
    assert summary["skipped_steps"] == 1
    everyone = WORLD.allgather(final_params(run_dir)[0]["params/head.bias"].tobytes())
    assert all(p == everyone[0] for p in everyone)
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        skipped = [r["step"] for r in map(json.loads, handle) if r.get("skipped")]
    assert skipped == [3]


def test_nonfinite_stop_raises_on_every_rank(shared_dir, nan_on_rank_last):
    from hpcrnn.train import TrainingError
    data = os.path.join(shared_dir, "nf.h5")
    if WORLD.rank == 0:
        write_windows(data, n=40)
    WORLD.Barrier()
    config = config_for(data, os.path.join(shared_dir, "nf-stop"), "float32",
                        **{"data.val_fraction": 0, "train.nonfinite": "stop"})
    with pytest.raises(TrainingError, match="non-finite loss or gradient at step 3"):
        train(config, WORLD)


@pytest.mark.parametrize("overlap", ["true", "false"])
def test_ranks_with_row_threads_match_one_thread_serial(shared_dir, overlap):
    """Hybrid ranks x threads (issue 14 point 3): P ranks of 2 row threads each train like 1 rank of 1."""
    data = os.path.join(shared_dir, "rows.h5")
    if WORLD.rank == 0:
        write_windows(data, n=61)
    WORLD.Barrier()
    hybrid_dir = os.path.join(shared_dir, f"rows-hybrid-{overlap}")
    serial_dir = os.path.join(shared_dir, f"rows-serial-{overlap}-rank{WORLD.rank}")
    settings = {"train.batch_size": 24, "train.numba_threads": 2, "train.overlap": overlap}
    train(config_for(data, hybrid_dir, "float64", **settings), WORLD)
    train(config_for(data, serial_dir, "float64", **{**settings, "train.numba_threads": 1}), MPI.COMM_SELF)
    WORLD.Barrier()
    hybrid, _ = final_params(hybrid_dir)
    serial, _ = final_params(serial_dir)
    for key in serial:
        np.testing.assert_allclose(hybrid[key], serial[key], rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(losses(hybrid_dir), losses(serial_dir), rtol=1e-9)
    with open(os.path.join(hybrid_dir, "summary.json")) as handle:
        assert all(r["threads"]["rows"] == 2 for r in json.load(handle)["per_rank"])
