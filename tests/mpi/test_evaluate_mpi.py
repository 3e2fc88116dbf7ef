"""Evaluation and prediction at P ranks on uneven splits (47 samples) against Model.predict of all samples at
once: training's eval lines, `hpcrnn evaluate` and `hpcrnn predict` (the CLI's main, in-process on COMM_WORLD).
Run under mpiexec -n 2 and -n 3."""
import json

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn.cli import main
from hpcrnn.config import load_config
from hpcrnn.run import train

from helpers import write_windows
from train_reference import assert_metrics_equal, expected_metrics, model_from, model_settings, newest_checkpoint, \
    read_windows, records

WORLD = MPI.COMM_WORLD
VAL = (53, 100)          # val_fraction 0.47 of 100 samples: the last 47


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data with 100 samples, another file with 47, run directory) of a short run on every rank."""
    folder = str(tmp_path_factory.mktemp("evaluate-mpi")) if WORLD.rank == 0 else None
    folder = WORLD.bcast(folder)
    data, other, run_dir = f"{folder}/d.h5", f"{folder}/other.h5", f"{folder}/run"
    if WORLD.rank == 0:
        write_windows(data, n=100, seq_len=5)
        write_windows(other, n=47, seq_len=5, seed=1)
    WORLD.Barrier()
    config = load_config(None, [f"data.path={data}", f"run_dir={run_dir}", *model_settings(), "optim.lr=0.02",
                                "train.batch_size=16", "train.epochs=1", "data.val_fraction=0.47",
                                "train.progress=none"])
    train(config, WORLD)
    WORLD.Barrier()
    return data, other, run_dir


def test_training_eval_lines_match_numpy(trained):
    data, _, run_dir = trained
    params, meta = newest_checkpoint(run_dir)
    evals = records(run_dir, "eval")
    assert [e["step"] for e in evals] == [meta["step"]]
    assert_metrics_equal(evals[-1], expected_metrics(model_from(params), *read_windows(data, *VAL)))


def cli_metrics(capsys, *args):
    assert main(["evaluate", *map(str, args)]) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]) if WORLD.rank == 0 else None


@pytest.mark.parametrize("split", ["val", "all"])
def test_cli_evaluate_matches_numpy(trained, capsys, split):
    data, other, run_dir = trained
    path, span = (data, VAL) if split == "val" else (other, (0, 47))
    metrics = cli_metrics(capsys, "--checkpoint", run_dir, "--data", path, "--split", split, "--batch-size", 10)
    if WORLD.rank == 0:
        expected = expected_metrics(model_from(newest_checkpoint(run_dir)[0]), *read_windows(path, *span))
        assert_metrics_equal(metrics, expected)


def test_cli_predict_rows_match_model_predict(trained):
    _, other, run_dir = trained
    out = f"{run_dir}/pred-{WORLD.size}.h5"
    assert main(["predict", "--checkpoint", run_dir, "--data", other, "--out", out, "--batch-size", "7"]) == 0
    WORLD.Barrier()
    expected = model_from(newest_checkpoint(run_dir)[0]).predict(read_windows(other)[0]).astype(np.float32)
    with h5py.File(out, "r") as handle:
        got = handle["predictions"][()]
    assert got.shape == expected.shape == (47, 2)
    for row in range(len(expected)):
        np.testing.assert_allclose(got[row], expected[row], rtol=1e-6, atol=1e-7, err_msg=f"row {row}")
