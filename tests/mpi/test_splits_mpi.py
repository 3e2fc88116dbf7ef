"""Random, stratified and val-file splits at P ranks: the same selection on every rank and for any rank count,
training that reproduces 1 rank (losses, eval lines, final parameters), and `hpcrnn evaluate --split val` that
finds the training run's val samples. Run under mpiexec -n 2 and -n 3; each rank also trains serially on
COMM_SELF as the reference."""
import json
import os

import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn.cli import main
from hpcrnn.config import load_config
from hpcrnn.data.schema import open_dataset
from hpcrnn.data.splits import choose_splits, random_split
from hpcrnn.run import train
from helpers import write_windows
from train_reference import assert_metrics_equal, expected_metrics, model_from, model_settings, newest_checkpoint, \
    read_windows, records

WORLD = MPI.COMM_WORLD
CASES = {   # name: (data.* settings, labels of the file)
    "random": (["data.split=random", "data.seed=5", "data.val_fraction=0.3"], 0),
    "stratified": (["data.split=stratified", "data.seed=2", "data.val_fraction=0.25"], 3),
    "val_path": (["data.val_path={other}", "data.split=random"], 0),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("splits-mpi")) if WORLD.rank == 0 else None
    path = WORLD.bcast(path)
    if WORLD.rank == 0:
        write_windows(f"{path}/regression.h5", n=47, seq_len=5)
        write_windows(f"{path}/other.h5", n=19, seq_len=5, seed=1)
        write_windows(f"{path}/labelled.h5", n=50, seq_len=5, labels=3)
    WORLD.Barrier()
    return path


def config_for(folder, case, run_dir):
    sets, labels = CASES[case]
    data = f"{folder}/labelled.h5" if labels else f"{folder}/regression.h5"
    sets = [s.format(other=f"{folder}/other.h5") for s in sets]
    return load_config(None, [f"data.path={data}", f"run_dir={run_dir}", *model_settings(), "optim.lr=0.02",
                              "train.batch_size=8", "train.epochs=2", "train.progress=none", "data.buffer_mb=0.001",
                              "checkpoint.every_epochs=1", *sets])


@pytest.mark.parametrize("case", list(CASES))
def test_every_rank_selects_the_samples_one_rank_selects(folder, case):
    config = config_for(folder, case, f"{folder}/unused")
    info = open_dataset(config.data.path, comm=WORLD)
    splits, infos = choose_splits(config.data, info, WORLD)
    serial, _ = choose_splits(config.data, info, MPI.COMM_SELF)
    mine = {name: (infos[name].path, split.array().tobytes()) for name, split in splits.items()}
    assert mine == {name: (infos[name].path, split.array().tobytes()) for name, split in serial.items()}
    assert all(other == mine for other in WORLD.allgather(mine))
    assert len(splits["val"]) > 0 and len(splits["train"]) > 0


@pytest.mark.parametrize("case", list(CASES))
def test_training_with_the_split_matches_one_rank(folder, case):
    parallel_dir, serial_dir = f"{folder}/par-{case}", f"{folder}/ser-{case}-rank{WORLD.rank}"
    train(config_for(folder, case, parallel_dir), WORLD)
    train(config_for(folder, case, serial_dir), MPI.COMM_SELF)
    WORLD.Barrier()
    par, meta = newest_checkpoint(parallel_dir)
    ser, _ = newest_checkpoint(serial_dir)
    assert meta["world_size"] == WORLD.size and meta["step"] > 0
    for key in ser:
        np.testing.assert_allclose(par[key], ser[key], rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose([r["loss"] for r in records(parallel_dir)], [r["loss"] for r in records(serial_dir)],
                               rtol=1e-9)
    par_evals, ser_evals = records(parallel_dir, "eval"), records(serial_dir, "eval")
    assert len(par_evals) == 2 and [e["count"] for e in par_evals] == [e["count"] for e in ser_evals]
    np.testing.assert_allclose([e["loss"] for e in par_evals], [e["loss"] for e in ser_evals], rtol=1e-9)


def cli_metrics(capsys, *args):
    assert main(["evaluate", *map(str, args)]) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]) if WORLD.rank == 0 else None


@pytest.mark.parametrize("case", list(CASES))
def test_evaluate_on_val_finds_the_training_runs_samples(folder, case, capsys):
    run_dir = f"{folder}/par-{case}"
    if not os.path.isdir(run_dir):
        train(config_for(folder, case, run_dir), WORLD)
    config = config_for(folder, case, run_dir)
    data = config.data.val_path or config.data.path
    metrics = cli_metrics(capsys, "--checkpoint", run_dir, "--which", "last", "--data", data, "--split", "val",
                          "--batch-size", 3)
    if WORLD.rank == 0:
        last_eval = records(run_dir, "eval")[-1]
        assert metrics["count"] == last_eval["count"]
        assert abs(metrics["loss"] - last_eval["loss"]) <= 1e-9 * abs(last_eval["loss"])
    if case == "random" and WORLD.rank == 0:        # against numpy on the drawn samples, from the public API
        val = random_split(47, 0.3, seed=5)["val"].array()
        x, y = read_windows(data)
        assert_metrics_equal(metrics, expected_metrics(model_from(newest_checkpoint(run_dir)[0]), x[val], y[val]))
