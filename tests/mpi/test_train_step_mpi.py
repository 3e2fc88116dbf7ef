"""Training arithmetic at P ranks against independent serial calculations (mpiexec -n 2 and -n 3): one SGD step
is params - lr * clip * mean gradient of the GLOBAL batch (25 samples: uneven shards), the initial parameters
are rank 0's, and a resumed run continues bitwise."""
import numpy as np
import pytest
from mpi4py import MPI

import hpcrnn.model
from hpcrnn.run import train

from helpers import write_windows
from train_reference import SAMPLES, SEQ_LEN, check_first_step, newest_checkpoint, records, resume_config, \
    step_config

WORLD = MPI.COMM_WORLD


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("step-mpi")) if WORLD.rank == 0 else None
    return WORLD.bcast(path)


@pytest.fixture(scope="module")
def data(shared_dir):
    path = f"{shared_dir}/d.h5"
    if WORLD.rank == 0:
        write_windows(path, n=SAMPLES, seq_len=SEQ_LEN)
    WORLD.Barrier()
    return path


@pytest.mark.parametrize("clip_norm, binding", [(0.0, False), (0.02, True)], ids=["clip-off", "clip-binding"])
def test_first_sgd_step_is_lr_clip_global_mean_gradient(shared_dir, data, clip_norm, binding):
    run_dir = f"{shared_dir}/step-{clip_norm}"
    summary = train(step_config(data, run_dir, clip_norm), WORLD)
    assert summary["ranks"] == WORLD.size
    WORLD.Barrier()
    check_first_step(run_dir, data, clip_norm, binding)


def test_initial_parameters_are_rank_0s(shared_dir, data, monkeypatch):
    """Ranks other than 0 initialise differently here (as with a rank-dependent RNG): training must still
    start from rank 0's parameters on every rank."""
    original = hpcrnn.model.Model.__init__

    def perturbed(self, *args, **kw):
        original(self, *args, **kw)
        self.params += 0.05 * WORLD.rank
    monkeypatch.setattr(hpcrnn.model.Model, "__init__", perturbed)
    run_dir = f"{shared_dir}/from-rank-0"
    train(step_config(data, run_dir, 0.0), WORLD)
    monkeypatch.undo()
    WORLD.Barrier()
    check_first_step(run_dir, data, 0.0, False)


def test_resume_continues_bitwise(shared_dir):
    data = f"{shared_dir}/resume.h5"
    if WORLD.rank == 0:
        write_windows(data, n=30, seq_len=5)
    WORLD.Barrier()
    straight, split, adam = f"{shared_dir}/straight", f"{shared_dir}/split", ["optim.name=adam"]
    train(resume_config(data, straight, adam), WORLD)
    train(resume_config(data, split, adam, "train.max_steps=5"), WORLD)
    train(resume_config(data, split, adam, "checkpoint.resume=auto"), WORLD)
    WORLD.Barrier()
    expected, meta = newest_checkpoint(straight)
    got, resumed_meta = newest_checkpoint(split)
    assert meta["step"] == resumed_meta["step"] == 12
    for key, value in expected.items():
        assert np.array_equal(got[key], value), key
    assert [r["loss"] for r in records(split)] == [r["loss"] for r in records(straight)]
