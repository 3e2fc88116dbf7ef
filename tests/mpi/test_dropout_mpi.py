"""Training with dropout (and bidirectional layers) on P ranks reproduces 1 rank: each sample's dropout mask
comes from (seed, step, global sample index), not from the rank or batch row that holds it. Run under
`mpiexec -n 2` and `-n 3`; each rank also trains serially on COMM_SELF as the reference."""
import os

import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn.config import load_config
from hpcrnn.run import train
from helpers import write_windows

WORLD = MPI.COMM_WORLD


def config_for(data, run_dir, cell, dropout, bidirectional, overlap=False):
    sets = [f"data.path={data}", f"run_dir={run_dir}", "model.dtype=float64", f"model.cell={cell}",
            "model.hidden_size=4", "model.num_layers=2", f"model.dropout={dropout}",
            f"model.bidirectional={str(bidirectional).lower()}", "train.epochs=2", "train.batch_size=10",
            "train.progress=none", "optim.name=adam", "optim.lr=0.01", "data.val_fraction=0.2",
            "data.buffer_mb=0.01", "checkpoint.every_epochs=1", f"train.overlap={str(overlap).lower()}"]
    return load_config(None, sets)


def final_checkpoint(run_dir):
    from hpcrnn.checkpoint import list_checkpoints, load
    arrays, meta = load(list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])
    return {k: v for k, v in arrays.items() if k.startswith("params/")}, arrays, meta


@pytest.mark.parametrize("cell,bidirectional,overlap", [("lstm", False, False), ("gru", True, True)])
def test_dropout_training_on_p_ranks_matches_one_rank(shared_dir, cell, bidirectional, overlap):
    """(gru: bidirectional, each layer's two directions reduced as one slice during BPTT with train.overlap.)"""
    data = os.path.join(shared_dir, "d.h5")
    if WORLD.rank == 0:
        write_windows(data, n=47, seq_len=6, lengths=True)
    WORLD.Barrier()
    name = f"{cell}-{bidirectional}"
    parallel_dir = os.path.join(shared_dir, f"par-{name}")
    serial_dir = os.path.join(shared_dir, f"ser-{name}-rank{WORLD.rank}")
    plain_dir = os.path.join(shared_dir, f"plain-{name}-rank{WORLD.rank}")
    train(config_for(data, parallel_dir, cell, 0.5, bidirectional, overlap), WORLD)
    train(config_for(data, serial_dir, cell, 0.5, bidirectional), MPI.COMM_SELF)
    train(config_for(data, plain_dir, cell, 0.0, bidirectional), MPI.COMM_SELF)
    WORLD.Barrier()
    par, arrays, meta = final_checkpoint(parallel_dir)
    ser, _, _ = final_checkpoint(serial_dir)
    plain, _, _ = final_checkpoint(plain_dir)
    assert meta["model"]["dropout"] == 0.5 and meta["model"]["bidirectional"] is bidirectional
    for key in ser:
        np.testing.assert_allclose(par[key], ser[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert not np.allclose(par["params/head.weight"], plain["params/head.weight"])   # the dropout acted
    from hpcrnn.evaluate import model_from_checkpoint
    model = model_from_checkpoint(arrays, meta)   # evaluate/predict rebuild the trained model
    assert model.dropout == 0.5 and model.bidirectional is bidirectional
    assert ("rnn.weight_ih_l1_reverse" in model.names) is bidirectional
