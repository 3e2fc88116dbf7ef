"""Independent expectations for training runs, from the public API only (shared by tests/unit and tests/mpi):
the first SGD step from Model.loss_and_grad on the whole global batch, evaluation metrics from Model.predict,
and a run directory's checkpoints and metrics read back."""
import json
import math
import os

import numpy as np

import hpcrnn
from hpcrnn.checkpoint import list_checkpoints, load
from hpcrnn.config import load_config

# helpers.write_windows' defaults: 3 features, 2 outputs, head "last"; seq_len set by the callers below.
MODEL = dict(cell="lstm", input_size=3, hidden_size=6, num_layers=2, output_size=2, head="last",
             dtype=np.float64)
SAMPLES, SEQ_LEN, LR, SEED = 25, 6, 0.5, 3


def model_settings():
    return [f"model.cell={MODEL['cell']}", f"model.hidden_size={MODEL['hidden_size']}",
            f"model.num_layers={MODEL['num_layers']}", "model.dtype=float64"]


def step_config(data, run_dir, clip_norm, *extra):
    """One SGD step (momentum 0) on a global batch larger than the file: the step sees every sample."""
    sets = [f"data.path={data}", f"run_dir={run_dir}", *model_settings(), "optim.name=sgd", "optim.momentum=0",
            f"optim.lr={LR}", f"optim.clip_norm={clip_norm}", f"train.batch_size={SAMPLES + 7}", "train.epochs=1",
            "train.max_steps=1", f"train.seed={SEED}", "train.progress=none", "data.val_fraction=0",
            "checkpoint.every_steps=1"]
    return load_config(None, sets + list(extra))


def fresh_model(seed=SEED):
    """The model `train` starts from: hpcrnn.Model with the config's sizes and train.seed."""
    return hpcrnn.Model(seed=seed, **MODEL)


def read_windows(path, start=0, stop=None):
    import h5py
    with h5py.File(path, "r") as handle:
        return handle["inputs"][start:stop].astype(np.float64), handle["targets"][start:stop].astype(np.float64)


def newest_checkpoint(run_dir):
    """(params as a state_dict, meta) of the run's newest checkpoint."""
    arrays, meta = load(list_checkpoints(os.path.join(run_dir, "checkpoints"))[0])
    return {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}, meta


def records(run_dir, event=None):
    """metrics.jsonl lines: training steps (event None) or the lines of one event ("eval")."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [r for r in map(json.loads, handle) if r.get("event") == event]


def expected_first_step(data, clip_norm):
    """(params before, params after, mean loss, gradient norm, clip factor) of one SGD step on every sample:
    after = before - lr * clip * mean_grad, clip = min(1, clip_norm / (|mean_grad| + 1e-6)) as in
    torch.nn.utils.clip_grad_norm_ (1 when clip_norm is 0)."""
    model = fresh_model()
    before = model.state_dict()
    x, y = read_windows(data)
    loss, grads = model.loss_and_grad(x, y, loss="mse")
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    clip = min(1.0, clip_norm / (norm + 1e-6)) if clip_norm > 0 else 1.0
    after = {k: before[k] - LR * clip * grads[k] for k in before}
    return before, after, loss, norm, clip


def check_first_step(run_dir, data, clip_norm, binding):
    """Asserts the run's step-1 checkpoint and metrics line against expected_first_step."""
    before, after, loss, norm, clip = expected_first_step(data, clip_norm)
    assert (clip < 0.5) == binding, f"test set-up: clip factor {clip} (|g| {norm}, clip_norm {clip_norm})"
    params, meta = newest_checkpoint(run_dir)
    assert meta["step"] == 1
    moved = math.sqrt(sum(float(np.sum((params[k] - before[k]) ** 2)) for k in before))
    assert math.isclose(moved, LR * clip * norm, rel_tol=1e-8), \
        f"update norm {moved}, expected lr * clip * |mean grad| = {LR * clip * norm} (gradient scale or clipping " \
        f"wrong, or training did not start from Model(seed={SEED}))"
    for key in before:
        np.testing.assert_allclose(params[key], after[key], rtol=1e-10, atol=1e-13, err_msg=key)
    step = records(run_dir)[0]
    assert step["step"] == 1
    assert math.isclose(step["loss"], loss, rel_tol=1e-10), (step["loss"], loss)
    assert math.isclose(step["grad_norm"], norm, rel_tol=1e-8), (step["grad_norm"], norm)   # before clipping


def resume_config(data, run_dir, optimizer, *extra):
    """A few epochs of small batches, a checkpoint every step (float64, no validation)."""
    sets = [f"data.path={data}", f"run_dir={run_dir}", *model_settings(), *optimizer, "optim.lr=0.05",
            "train.batch_size=8", "train.epochs=3", "train.progress=none", "data.val_fraction=0",
            "checkpoint.every_steps=1", "checkpoint.keep=2"]
    return load_config(None, sets + list(extra))


def expected_metrics(model, x, y):
    """mse loss, rmse, mae and count of `model` on (x, y) from Model.predict of all samples at once."""
    error = model.predict(x).astype(np.float64) - y
    return {"loss": float(np.mean(error ** 2)), "rmse": math.sqrt(float(np.mean(error ** 2))),
            "mae": float(np.mean(np.abs(error))), "count": len(x)}


def model_from(params, seed=0):
    model = fresh_model(seed)
    model.load_state_dict(params)
    return model


def assert_metrics_equal(got, expected, rtol=1e-9):
    assert got["count"] == expected["count"], (got, expected)
    for key in ("loss", "rmse", "mae"):
        assert math.isclose(got[key], expected[key], rel_tol=rtol), (key, got[key], expected[key])
