"""Kernel correctness: gradients against float64 central finite differences for every cell x head x loss x
depth x (with/without lengths), forward outputs against the plain NumPy reference, float32 against float64,
and the shared pieces (fast tanh, strided GEMM)."""
import os

import numpy as np
import pytest
from numba import njit

import hpcrnn
from hpcrnn.kernels.common import gemm, load_blas, sigmoid, tanh

from reference_numpy import loss as reference_loss
from reference_numpy import predict as reference_predict

CELLS = ("lstm", "gru", "rnn", "gated")
HEAD_LOSSES = (("last", "mse"), ("last", "mae"), ("last", "cross_entropy"), ("sequence", "mse"),
               ("sequence", "mae"))


def make_problem(cell, head, loss, layers, with_lengths, dtype=np.float64, batch=3, steps=4, features=2,
                 hidden=3, outputs=3, seed=0):
    """A small model and a batch (x, y, lengths) for it."""
    rng = np.random.default_rng(seed)
    model = hpcrnn.Model(cell=cell, input_size=features, hidden_size=hidden, num_layers=layers,
                         output_size=outputs, head=head, dtype=dtype, seed=seed)
    x = rng.standard_normal((batch, steps, features))
    if loss == "cross_entropy":
        y = rng.integers(0, outputs, batch)
    elif head == "last":
        y = rng.standard_normal((batch, outputs))
    else:
        y = rng.standard_normal((batch, steps, outputs))
    lengths = rng.integers(1, steps + 1, batch) if with_lengths else None
    if with_lengths:
        lengths[0] = steps  # one full-length row, at least one short row
        lengths[-1] = max(1, steps // 2)
    return model, x, y, lengths


def mean_loss(model, x, y, loss, lengths):
    return model.per_sample_stats(x, y, loss, lengths=lengths)["loss_sum"] / x.shape[0]


def finite_difference(model, x, y, loss, lengths, coords, eps=1e-6):
    """Central differences of the mean loss wrt the flat parameter coordinates `coords`."""
    params, result = model.params, []
    for k in coords:
        old = params[k]
        params[k] = old + eps
        plus = mean_loss(model, x, y, loss, lengths)
        params[k] = old - eps
        minus = mean_loss(model, x, y, loss, lengths)
        params[k] = old
        result.append((plus - minus) / (2 * eps))
    return np.array(result)


def flat_gradient(model, x, y, loss, lengths):
    grad = model.flat_grad_buffer()
    loss_sum = model.forward_backward(x, y, grad, loss=loss, lengths=lengths)
    return loss_sum / x.shape[0], grad / x.shape[0]


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("head,loss", HEAD_LOSSES)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, head, loss, layers, with_lengths):
    model, x, y, lengths = make_problem(cell, head, loss, layers, with_lengths)
    loss_value, grad = flat_gradient(model, x, y, loss, lengths)
    assert np.isclose(loss_value, mean_loss(model, x, y, loss, lengths), rtol=1e-12)
    numeric = finite_difference(model, x, y, loss, lengths, range(model.num_params))
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_of_a_larger_model_on_random_coordinates(cell):
    model, x, y, lengths = make_problem(cell, "sequence", "mse", 2, True, batch=5, steps=9, features=5,
                                        hidden=8, outputs=2, seed=3)
    coords = np.random.default_rng(1).choice(model.num_params, 60, replace=False)
    _, grad = flat_gradient(model, x, y, "mse", lengths)
    numeric = finite_difference(model, x, y, "mse", lengths, coords)
    np.testing.assert_allclose(grad[coords], numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", ["last", "sequence"])
@pytest.mark.parametrize("cell", CELLS)
def test_outputs_and_loss_match_numpy_reference(cell, head, dtype):
    model, x, y, lengths = make_problem(cell, head, "mse", 2, True, dtype=dtype, batch=4, steps=6,
                                        features=3, hidden=5, outputs=2, seed=7)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    expected, finals = reference_predict(cell, params, x, 2, head, lengths)
    y_hat, state = model.predict(x, lengths=lengths, return_state=True)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y_hat, expected, rtol=tol, atol=tol)
    for ours, theirs in zip(state, finals):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=tol, atol=tol)
    loss_value, _ = model.loss_and_grad(x, y, loss="mse", lengths=lengths)
    assert np.isclose(loss_value, reference_loss("mse", expected, y, lengths), rtol=max(tol, 1e-6) * 10)


@pytest.mark.parametrize("head,loss", HEAD_LOSSES)
@pytest.mark.parametrize("cell", CELLS)
def test_float32_gradients_match_float64(cell, head, loss):
    model64, x, y, lengths = make_problem(cell, head, loss, 2, True, batch=6, steps=7, features=4, hidden=16)
    model32 = hpcrnn.Model(cell=cell, input_size=4, hidden_size=16, num_layers=2, output_size=3, head=head,
                           dtype=np.float32)
    model32.load_state_dict(model64.state_dict())
    loss64, grads64 = model64.loss_and_grad(x, y, loss=loss, lengths=lengths)
    loss32, grads32 = model32.loss_and_grad(x.astype(np.float32), y, loss=loss, lengths=lengths)
    assert np.isclose(loss32, loss64, rtol=1e-5)
    for name in model64.names:
        assert grads32[name].dtype == np.float32
        scale = np.abs(grads64[name]).max() + 1e-3
        np.testing.assert_allclose(grads32[name], grads64[name], atol=2e-5 * scale + 1e-6, err_msg=name)


# ---- shared kernel pieces -------------------------------------------------------------------------------
@njit(cache=True, fastmath=True, error_model="numpy")
def _activations(out_tanh, out_sigmoid, x):
    for i in range(x.shape[0]):
        out_tanh[i] = tanh(x[i])
        out_sigmoid[i] = sigmoid(x[i])


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 4e-7), (np.float64, 1e-15)])
def test_fast_tanh_and_sigmoid_accuracy(dtype, rtol):
    x = np.concatenate([np.linspace(-20, 20, 200_001), [0.0, 1e-8, -1e-30, 9.5, -9.5]]).astype(dtype)
    out_tanh, out_sigmoid = np.empty_like(x), np.empty_like(x)
    _activations(out_tanh, out_sigmoid, x)
    exact = np.tanh(x.astype(np.float64))
    assert np.all(np.abs(out_tanh - exact) <= rtol * np.abs(exact) + 1e-45)
    np.testing.assert_allclose(out_sigmoid, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=0, atol=2 * rtol)
    assert out_tanh.dtype == dtype and np.all(np.abs(out_tanh) <= 1)


@njit(cache=True)
def _gemm(C, A, B, trans_a, trans_b, beta):
    gemm(C, A, B, trans_a, trans_b, beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_on_strided_blocks(dtype, trans_a, trans_b):
    load_blas()               # a kernel called directly: register the BLAS first (hpcrnn.Model does it)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((5, 7)), rng.standard_normal((7, 4))
    stored_a, stored_b = (A.T if trans_a else A), (B.T if trans_b else B)
    wide_a = np.zeros((stored_a.shape[0], stored_a.shape[1] + 5), dtype)  # operands are column blocks
    wide_b = np.zeros((stored_b.shape[0], stored_b.shape[1] + 2), dtype)  # of wider buffers
    wide_a[:, 3:3 + stored_a.shape[1]] = stored_a
    wide_b[:, 2:2 + stored_b.shape[1]] = stored_b
    op_a, op_b = wide_a[:, 3:3 + stored_a.shape[1]], wide_b[:, 2:2 + stored_b.shape[1]]
    out = rng.standard_normal((6, 10)).astype(dtype)
    expected = out.astype(np.float64)
    expected[1:6, 2:6] += A @ B
    _gemm(out[1:6, 2:6], op_a, op_b, trans_a, trans_b, 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    _gemm(out[1:6, 2:6], op_a, op_b, trans_a, trans_b, 0.0)
    np.testing.assert_allclose(out[1:6, 2:6], A @ B, rtol=1e-5, atol=1e-5)


def test_gemm_calls_numpys_openblas_where_numpy_bundles_one():
    import glob
    import os
    from hpcrnn.kernels import common
    folder = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    if not glob.glob(os.path.join(folder, "libscipy_openblas*")):
        pytest.skip(f"numpy has no bundled OpenBLAS in {folder}: gemm uses scipy's BLAS (tested above)")
    symbols, int_bits = common.load_blas()
    assert set(symbols) == {"f4", "f8"} and int_bits in (32, 64)


SCIPY_BLAS_RUN = """
import sys, numpy as np, hpcrnn
from hpcrnn.kernels import common
assert not common.load_blas()[0], "HPCRNN_KERNEL_BLAS=scipy was not honoured"
out = {}
for dtype in (np.float32, np.float64):
    model = hpcrnn.Model(cell="rnn", input_size=3, hidden_size=5, output_size=2, num_layers=2, dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((4, 6, 3)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
    loss, grads = model.loss_and_grad(x, y)
    out.update({f"{np.dtype(dtype).name}/{k}": v for k, v in grads.items()})
    out[f"{np.dtype(dtype).name}/loss"] = np.array(loss)
np.savez(sys.argv[1], **out)
"""


def test_the_scipy_blas_path_gives_the_same_gradients(tmp_path):
    import subprocess
    import sys
    env = {**os.environ, "HPCRNN_KERNEL_BLAS": "scipy", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", SCIPY_BLAS_RUN, str(tmp_path / "g.npz")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    theirs = np.load(tmp_path / "g.npz")
    for dtype in (np.float32, np.float64):
        model = hpcrnn.Model(cell="rnn", input_size=3, hidden_size=5, output_size=2, num_layers=2, dtype=dtype, seed=1)
        rng = np.random.default_rng(2)
        x, y = rng.standard_normal((4, 6, 3)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
        loss, grads = model.loss_and_grad(x, y)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        name = np.dtype(dtype).name
        np.testing.assert_allclose(loss, theirs[f"{name}/loss"], rtol=rtol)
        for key, value in grads.items():
            np.testing.assert_allclose(value, theirs[f"{name}/{key}"], rtol=rtol, atol=rtol * 1e-3)
