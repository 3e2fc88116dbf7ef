"""Training arithmetic against independent calculations (serial; tests/mpi/test_train_step_mpi.py does the same
at 2 and 3 ranks): one SGD step is params - lr * clip * mean gradient of the whole global batch, with clipping
binding, not binding, and off; a run stopped and resumed continues bitwise as if it had not stopped."""
import numpy as np
import pytest
from mpi4py import MPI

from hpcrnn.run import train

from helpers import write_windows
from train_reference import SAMPLES, SEQ_LEN, check_first_step, newest_checkpoint, records, resume_config, \
    step_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_windows(str(tmp_path_factory.mktemp("step") / "d.h5"), n=SAMPLES, seq_len=SEQ_LEN)


@pytest.mark.parametrize("clip_norm, binding", [(0.0, False), (100.0, False), (0.02, True)],
                         ids=["clip-off", "clip-not-binding", "clip-binding"])
def test_first_sgd_step_is_lr_clip_mean_gradient(data, tmp_path, clip_norm, binding):
    train(step_config(data, str(tmp_path / "run"), clip_norm), MPI.COMM_SELF)
    check_first_step(str(tmp_path / "run"), data, clip_norm, binding)


OPTIMIZERS = {"adam": ["optim.name=adam"], "adamw": ["optim.name=adamw", "optim.weight_decay=0.1"],
              "nesterov": ["optim.name=sgd", "optim.momentum=0.9", "optim.nesterov=true"]}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_resume_continues_bitwise(tmp_path, optimizer):
    """12 steps straight vs 5 steps, then resume (mid-epoch) to the end: same parameters and losses, bitwise;
    the optimizer state (moments, step count) must travel through the checkpoint."""
    data = write_windows(str(tmp_path / "d.h5"), n=30, seq_len=5)
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train(resume_config(data, straight, OPTIMIZERS[optimizer]), MPI.COMM_SELF)
    train(resume_config(data, split, OPTIMIZERS[optimizer], "train.max_steps=5"), MPI.COMM_SELF)
    assert newest_checkpoint(split)[1]["step"] == 5
    train(resume_config(data, split, OPTIMIZERS[optimizer], "checkpoint.resume=auto"), MPI.COMM_SELF)
    expected, meta = newest_checkpoint(straight)
    got, resumed_meta = newest_checkpoint(split)
    assert meta["step"] == resumed_meta["step"] == 12
    for key, value in expected.items():
        assert np.array_equal(got[key], value), key
    assert [r["step"] for r in records(split)] == list(range(1, 13))
    assert [r["loss"] for r in records(split)] == [r["loss"] for r in records(straight)]
