"""The Model API contract: flat parameter buffer and views, state_dict, forward_backward sums and scaling,
B = 0, variable lengths, truncated BPTT, evaluation sums, and ValueErrors for bad input."""
import numpy as np
import pytest

import hpcrnn

from reference_numpy import predict as reference_predict
from test_kernels import finite_difference, make_problem


def small(cell="lstm", head="last", dtype=np.float32, **kw):
    sizes = dict(input_size=3, hidden_size=5, num_layers=2, output_size=2)
    sizes.update(kw)
    return hpcrnn.Model(cell=cell, head=head, dtype=dtype, seed=0, **sizes)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "gated"])
def test_flat_buffer_views_and_names(cell):
    m = small(cell)
    gates = {"lstm": 4, "gru": 3, "rnn": 1, "gated": 4}[cell]
    assert m.views["rnn.weight_ih_l0"].shape == (gates * 5, 3)
    assert m.views["rnn.weight_hh_l1"].shape == (gates * 5, 5)
    assert ("rnn.bias_hh_l0" in m.names) == (cell != "gated")
    assert m.names[-2:] == ["head.weight", "head.bias"] and list(m.views) == m.names
    assert m.num_params == m.params.size == sum(v.size for v in m.views.values())
    assert m.params.ndim == 1 and m.params.flags.c_contiguous and m.params.dtype == np.float32
    for view in m.views.values():
        assert np.shares_memory(view, m.params)
    m.views["head.bias"][...] = 7
    assert np.all(m.params[-2:] == 7)
    flat = m.flat_grad_buffer()
    assert flat.shape == m.params.shape and not flat.any()
    assert all(np.shares_memory(v, flat) for v in m.unflatten(flat).values())
    assert (m.cell, m.head, m.input_size, m.hidden_size, m.num_layers, m.output_size) == (cell, "last", 3, 5, 2, 2)


def test_initialisation_is_pytorch_like_and_seeded():
    a, b = small(), small()
    c = hpcrnn.Model(input_size=3, hidden_size=5, num_layers=2, output_size=2, seed=1)
    assert np.array_equal(a.params, b.params) and not np.array_equal(a.params, c.params)
    bound = 1 / np.sqrt(5)
    assert np.abs(a.params).max() <= bound and np.abs(a.params).max() > 0.9 * bound


def test_state_dict_round_trip_and_errors():
    m, other = small(), hpcrnn.Model(input_size=3, hidden_size=5, num_layers=2, output_size=2, seed=9)
    sd = other.state_dict()
    sd["head.bias"][...] = 3  # copies: editing them does not touch the model
    assert not np.all(other.views["head.bias"] == 3)
    m.load_state_dict(sd)
    assert all(np.array_equal(m.views[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="rnn.bias_hh_l1"):
        m.load_state_dict({k: v for k, v in sd.items() if k != "rnn.bias_hh_l1"})
    with pytest.raises(ValueError, match="extra.weight"):
        m.load_state_dict({**sd, "extra.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="head.weight"):
        m.load_state_dict({**sd, "head.weight": np.zeros((3, 5))})


def test_forward_backward_sums_adds_and_scales():
    m, x, y, lengths = make_problem("gru", "sequence", "mse", 2, True, dtype=np.float64, batch=4)
    loss, grads = m.loss_and_grad(x, y, lengths=lengths)
    grad = m.flat_grad_buffer()
    loss_sum = m.forward_backward(x, y, grad, lengths=lengths)
    assert np.isclose(loss_sum, 4 * loss)
    m.forward_backward(x, y, grad, lengths=lengths, scale=0.5)  # ADDS: 1 + 0.5 of the sum's gradient
    for name, view in m.unflatten(grad).items():
        np.testing.assert_allclose(view, 1.5 * 4 * grads[name], rtol=1e-12, atol=1e-15)
    # two halves of a batch, summed, reproduce the whole batch (what ranks do)
    halves = m.flat_grad_buffer()
    total = sum(m.forward_backward(x[s], y[s], halves, lengths=lengths[s]) for s in (slice(0, 1), slice(1, 4)))
    assert np.isclose(total, loss_sum)
    np.testing.assert_allclose(halves, grad / 1.5, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("head", ["last", "sequence"])
def test_empty_batch(head):
    m = small(head=head)
    y = np.zeros((0, 2)) if head == "last" else np.zeros((0, 4, 2))
    grad = m.flat_grad_buffer()
    assert m.forward_backward(np.zeros((0, 4, 3)), y, grad) == 0.0 and not grad.any()
    loss_sum, state = m.forward_backward(np.zeros((0, 4, 3)), y, grad, return_state=True)
    assert loss_sum == 0.0 and state[0][0].shape == (0, 5)
    assert m.predict(np.zeros((0, 4, 3))).shape == ((0, 2) if head == "last" else (0, 4, 2))
    stats = m.per_sample_stats(np.zeros((0, 4, 3)), y, "mse")
    assert stats["count"] == 0 and stats["loss_sum"] == 0.0


@pytest.mark.parametrize("cell", ["lstm", "gated"])
@pytest.mark.parametrize("head", ["last", "sequence"])
def test_padding_has_no_effect(cell, head):
    m, x, y, lengths = make_problem(cell, head, "mse", 2, True, dtype=np.float64, batch=4, steps=6)
    noisy = x.copy()
    for b, steps in enumerate(lengths):
        noisy[b, steps:] = np.nan if b % 2 else 1e3
        if head == "sequence":
            y[b, steps:] = np.nan if b % 2 else -1e3
    loss, grads = m.loss_and_grad(x, np.nan_to_num(y), lengths=lengths)
    loss_noisy, grads_noisy = m.loss_and_grad(noisy, y, lengths=lengths)
    assert loss == loss_noisy
    assert all(np.array_equal(grads[k], grads_noisy[k]) for k in grads)
    assert np.array_equal(m.predict(x, lengths=lengths), m.predict(noisy, lengths=lengths))
    if head == "sequence":
        assert not m.predict(x, lengths=lengths)[3, lengths[3]:].any()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "gated"])
def test_truncated_bptt_windows(cell):
    m, x, y, _ = make_problem(cell, "sequence", "mse", 2, False, batch=3, steps=9, features=2, hidden=4)
    whole, whole_state = m.predict(x, return_state=True)
    first, state = m.predict(x[:, :5], return_state=True)
    second, final = m.predict(x[:, 5:], h0=state, return_state=True)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(final, whole_state):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-12, atol=1e-14)
    # gradient of window 2 is that of a loss whose initial state is a constant (it stops at the window edge)
    grad = m.flat_grad_buffer()
    m.forward_backward(x[:, 5:], y[:, 5:], grad, h0=state, scale=1 / 3)
    coords = np.random.default_rng(0).choice(m.num_params, 40, replace=False)
    numeric = []
    for k in coords:  # the carried state is held fixed while a parameter moves
        old = m.params[k]
        m.params[k] = old + 1e-6
        plus = _loss_with_state(m, x[:, 5:], y[:, 5:], state)
        m.params[k] = old - 1e-6
        minus = _loss_with_state(m, x[:, 5:], y[:, 5:], state)
        m.params[k] = old
        numeric.append((plus - minus) / 2e-6)
    np.testing.assert_allclose(grad[coords], numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(grad).max() > 1e-3


def _loss_with_state(m, x, y, state):
    grad = m.flat_grad_buffer()
    return m.forward_backward(x, y, grad, h0=state) / x.shape[0]


def test_final_state_is_last_valid_step():
    m, x, _, lengths = make_problem("lstm", "last", "mse", 2, True, dtype=np.float64, batch=4, steps=6)
    _, state = m.predict(x, lengths=lengths, return_state=True)
    _, finals = reference_predict("lstm", m.state_dict(), x, 2, "last", lengths)
    for (h, c), (ref_h, ref_c) in zip(state, finals):
        np.testing.assert_allclose(h, ref_h, rtol=1e-12)
        np.testing.assert_allclose(c, ref_c, rtol=1e-12)


def test_per_sample_stats():
    m, x, y, lengths = make_problem("rnn", "sequence", "mae", 1, True, dtype=np.float64, batch=4, steps=5)
    stats = m.per_sample_stats(x, y, "mae", lengths=lengths)
    y_hat = m.predict(x, lengths=lengths)
    valid = np.arange(5)[None, :] < lengths[:, None]
    error = (y_hat - y)[valid]
    assert stats["count"] == 4 and stats["elem_count"] == error.size
    assert np.isclose(stats["sq_err_sum"], (error ** 2).sum()) and np.isclose(stats["abs_err_sum"], np.abs(error).sum())
    assert np.isclose(stats["loss_sum"], 4 * m.loss_and_grad(x, y, loss="mae", lengths=lengths)[0])
    c, xc, yc, _ = make_problem("gru", "last", "cross_entropy", 1, False, batch=6)
    stats = c.per_sample_stats(xc, yc, "cross_entropy")
    assert stats["correct"] == int((c.predict(xc).argmax(axis=1) == yc).sum())


def test_other_float_dtype_is_converted():
    m, x, y, _ = make_problem("lstm", "last", "mse", 1, False, dtype=np.float32)
    assert m.predict(x.astype(np.float16)).dtype == np.float32
    np.testing.assert_allclose(m.predict(x), m.predict(x.astype(np.float32)), rtol=1e-6)
    assert m.loss_and_grad(x, y)[1]["head.bias"].dtype == np.float32


BAD_INPUTS = [
    (dict(x=np.zeros((4, 3))), "x: expected 3 dims"),
    (dict(x=np.zeros((2, 4, 7))), "x: expected 3 features"),
    (dict(x=np.zeros((2, 4, 3), np.int64)), "x: expected a floating-point"),
    (dict(x=np.zeros((2, 0, 3))), "x: expected at least 1 time step"),
    (dict(x=np.full((2, 4, 3), np.nan), check_finite=True), "x: contains NaN"),
    (dict(y=np.zeros((2, 3))), "y: expected shape"),
    (dict(y=np.full((2, 2), np.inf), check_finite=True), "y: contains NaN"),
    (dict(lengths=np.array([4, 5])), "lengths: expected values in"),
    (dict(lengths=np.array([0, 2])), "lengths: expected values in"),
    (dict(lengths=np.array([4])), "lengths: expected shape"),
    (dict(lengths=np.array([1.0, 2.0])), "lengths: expected an integer"),
    (dict(loss="hinge"), "loss: expected one of"),
    (dict(loss="cross_entropy", y=np.array([0, 2])), "y: expected labels in"),
    (dict(loss="cross_entropy", y=np.zeros(2)), "y: expected integer class labels"),
]


@pytest.mark.parametrize("kwargs,message", BAD_INPUTS)
def test_bad_inputs_raise_value_errors_naming_the_argument(kwargs, message):
    m = small()
    args = dict(x=np.zeros((2, 4, 3)), y=np.zeros((2, 2)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        m.check_inputs(**args)


def test_bad_config_and_calls():
    for kwargs, message in [(dict(cell="tcn"), "cell: expected one of"), (dict(head="mean"), "head:"),
                            (dict(hidden_size=0), "hidden_size: expected a positive"),
                            (dict(dtype=np.int32), "dtype: expected float32 or float64")]:
        with pytest.raises(ValueError, match=message):
            small(**kwargs)
    seq = small(head="sequence")
    with pytest.raises(ValueError, match="loss: cross_entropy needs head 'last'"):
        seq.loss_and_grad(np.zeros((2, 4, 3)), np.zeros(2, np.int64), loss="cross_entropy")
    m = small()
    with pytest.raises(ValueError, match="h0"):
        m.predict(np.zeros((2, 4, 3)), h0=[np.zeros((2, 5))] * 2)  # lstm needs (h, c) pairs
    with pytest.raises(ValueError, match="grad_out"):
        m.forward_backward(np.zeros((2, 4, 3)), np.zeros((2, 2)), np.zeros(3, np.float32))
    assert np.isfinite(finite_difference(m, np.ones((1, 2, 3)), np.ones((1, 2)), "mse", None, [0])).all()
