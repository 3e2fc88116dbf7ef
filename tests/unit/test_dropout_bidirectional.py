"""Dropout between stacked layers and bidirectional layers: gradients against float64 finite differences (the
dropout mask fixed by (seed, step, sample indices)), forward outputs against a NumPy reference of packed
bidirectional sequences, masks independent of the batch a sample sits in, dropout off in inference, the
Model/config arguments and their errors. The comparison with torch's modules is in test_kernels_torch.py."""
import numpy as np
import pytest

import hpcrnn
from hpcrnn.config import ConfigError, load_config

from reference_numpy import STEPS

CELLS = ("lstm", "gru", "rnn", "gated")


def small_problem(cell, head="last", layers=2, dropout=0.0, bidirectional=False, dtype=np.float64, batch=3,
                  steps=4, features=2, hidden=3, outputs=2, seed=0):
    """A small model and a batch (x, y, lengths) with one full-length and one short row."""
    rng = np.random.default_rng(seed)
    model = hpcrnn.Model(cell=cell, input_size=features, hidden_size=hidden, num_layers=layers,
                         output_size=outputs, head=head, dtype=dtype, seed=seed, dropout=dropout,
                         bidirectional=bidirectional)
    x = rng.standard_normal((batch, steps, features))
    y = rng.standard_normal((batch, outputs) if head == "last" else (batch, steps, outputs))
    lengths = rng.integers(1, steps + 1, batch)
    lengths[0], lengths[-1] = steps, max(1, steps // 2)
    return model, x, y, lengths


def loss_sum(model, x, y, lengths, step, indices, grad=None):
    grad = model.flat_grad_buffer() if grad is None else grad
    return model.forward_backward(x, y, grad, lengths=lengths, step=step, sample_indices=indices)


@pytest.mark.parametrize("head", ["last", "sequence"])
@pytest.mark.parametrize("dropout,bidirectional", [(0.0, True), (0.5, False), (0.5, True)],
                         ids=["bidirectional", "dropout", "both"])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, dropout, bidirectional, head):
    model, x, y, lengths = small_problem(cell, head, dropout=dropout, bidirectional=bidirectional)
    step, indices = 7, np.array([11, 4, 30])
    grad = model.flat_grad_buffer()
    loss_sum(model, x, y, lengths, step, indices, grad)
    numeric, eps = np.empty(model.num_params), 1e-6
    for k in range(model.num_params):
        old = model.params[k]
        model.params[k] = old + eps
        plus = loss_sum(model, x, y, lengths, step, indices)
        model.params[k] = old - eps
        minus = loss_sum(model, x, y, lengths, step, indices)
        model.params[k] = old
        numeric[k] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3


# ---- bidirectional forward against a reference ---------------------------------------------------------
def bidirectional_reference(cell, params, x, num_layers, head, lengths):
    """Head outputs of a bidirectional stack run like torch's packed sequences: the reverse direction reads
    x[len-1], ..., x[0]; outputs are [forward, reverse] at each valid step, 0 past it; head "last" reads
    the output at step len-1 (what pad_packed_sequence gives there)."""
    B, T, _ = x.shape
    H = params["rnn.weight_hh_l0"].shape[1]
    inputs = np.asarray(x, np.float64)
    for layer in range(num_layers):
        outputs = np.zeros((B, T, 2 * H))
        for half, suffix in enumerate(("", "_reverse")):
            weights = [np.asarray(params.get(f"rnn.{k}_l{layer}{suffix}", np.zeros(0)), np.float64)
                       for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for b in range(B):
                state = (np.zeros(H), np.zeros(H)) if cell == "lstm" else np.zeros(H)
                order = range(lengths[b]) if half == 0 else range(lengths[b] - 1, -1, -1)
                for t in order:
                    state = STEPS[cell](inputs[b, t], state, *weights)
                    outputs[b, t, half * H:(half + 1) * H] = state[0] if cell == "lstm" else state
        inputs = outputs
    W, bias = np.asarray(params["head.weight"], np.float64), np.asarray(params["head.bias"], np.float64)
    if head == "last":
        return inputs[np.arange(B), lengths - 1] @ W.T + bias
    y_hat = inputs @ W.T + bias
    y_hat[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return y_hat


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", ["last", "sequence"])
@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_outputs_match_reference(cell, head, dtype):
    model, x, y, lengths = small_problem(cell, head, bidirectional=True, dtype=dtype, batch=4, steps=6,
                                         features=3, hidden=5, seed=7)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    expected = bidirectional_reference(cell, params, x, 2, head, lengths)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(model.predict(x, lengths=lengths), expected, rtol=tol, atol=tol)
    x_nan = x.copy()
    x_nan[-1, lengths[-1]:] = np.nan   # padding has no effect
    np.testing.assert_allclose(model.predict(x_nan, lengths=lengths), expected, rtol=tol, atol=tol)


def test_bidirectional_layout_names_and_spans():
    model = hpcrnn.Model(cell="gated", input_size=3, hidden_size=4, num_layers=2, output_size=2,
                         bidirectional=True)
    assert model.names[:7] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.weight_ih_l0_reverse",
                               "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0_reverse", "rnn.weight_ih_l1"]
    assert model.views["rnn.weight_ih_l1_reverse"].shape == (16, 8)
    assert model.views["head.weight"].shape == (2, 8)
    first, second = model.layer_span(0), model.layer_span(1)
    assert first == (0, second[0]) and second[1] == model.num_params - 2 * 8 - 2
    with pytest.raises(ValueError, match="h0: carried states need a unidirectional"):
        model.predict(np.zeros((1, 2, 3)), h0=[np.zeros((1, 4))] * 2)
    with pytest.raises(ValueError, match="return_state"):
        model.predict(np.zeros((1, 2, 3)), return_state=True)


# ---- dropout ---------------------------------------------------------------------------------------------
def test_a_samples_mask_does_not_depend_on_its_batch():
    """Loss sums and gradients of a batch equal those of its samples run one at a time with their global
    indices: the property that makes P ranks match 1 rank."""
    model, x, y, lengths = small_problem("lstm", "sequence", layers=3, dropout=0.5, bidirectional=True, batch=3)
    indices = np.array([8, 2, 5])
    whole = model.flat_grad_buffer()
    total = loss_sum(model, x, y, lengths, 4, indices, whole)
    parts, total_parts = model.flat_grad_buffer(), 0.0
    for b in (2, 0, 1):
        total_parts += loss_sum(model, x[b:b + 1], y[b:b + 1], lengths[b:b + 1], 4, indices[b:b + 1], parts)
    assert np.isclose(total, total_parts, rtol=1e-12)
    np.testing.assert_allclose(whole, parts, rtol=1e-10, atol=1e-14)
    assert loss_sum(model, x, y, lengths, 5, indices) != total           # a new step, a new mask
    assert loss_sum(model, x, y, lengths, 4, indices[::-1].copy()) != total   # other samples, other masks


def test_masks_drop_p_and_scale_the_rest():
    model = hpcrnn.Model(cell="rnn", input_size=2, hidden_size=50, num_layers=3, dropout=0.3, seed=5)
    masks = model.dropout_masks(40, 30, 2, np.arange(100, 140))
    assert masks[0] is None and len(masks) == 3
    values = np.concatenate([m.ravel() for m in masks[1:]])
    assert set(np.unique(values)) == {0, np.float32(1 / 0.7)}
    assert abs((values == 0).mean() - 0.3) < 0.01
    assert not np.array_equal(masks[1], masks[2])                     # layers draw their own masks
    assert hpcrnn.Model(cell="rnn", num_layers=1, dropout=0.3).dropout_masks(4, 3, 0, np.arange(4)) is None


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_is_off_in_inference(bidirectional):
    model, x, y, lengths = small_problem("gru", "sequence", layers=2, dropout=0.6, bidirectional=bidirectional)
    plain = hpcrnn.Model(cell="gru", input_size=2, hidden_size=3, num_layers=2, output_size=2, head="sequence",
                         dtype=np.float64, bidirectional=bidirectional)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(model.predict(x, lengths=lengths), plain.predict(x, lengths=lengths))
    assert model.per_sample_stats(x, y, "mse", lengths) == plain.per_sample_stats(x, y, "mse", lengths)
    trained = loss_sum(model, x, y, lengths, 0, np.arange(3))
    assert trained != loss_sum(plain, x, y, lengths, 0, np.arange(3))   # but on in training


# ---- arguments, meta, config -----------------------------------------------------------------------------
def test_meta_records_dropout_and_direction_and_old_meta_loads():
    model = hpcrnn.Model(cell="gru", input_size=2, hidden_size=3, num_layers=2, dropout=0.25, bidirectional=True)
    meta = model.meta()
    assert meta["dropout"] == 0.25 and meta["bidirectional"] is True
    again = hpcrnn.Model.from_meta(meta)
    assert again.names == model.names and again.dropout == 0.25 and again.bidirectional
    old = {k: v for k, v in meta.items() if k not in ("dropout", "bidirectional")}
    legacy = hpcrnn.Model.from_meta(old)
    assert legacy.dropout == 0.0 and not legacy.bidirectional and "rnn.weight_ih_l0_reverse" not in legacy.names


@pytest.mark.parametrize("kwargs,fragment", [({"dropout": 1.0}, "dropout: expected a number in [0, 1)"),
                                             ({"dropout": -0.1}, "dropout"), ({"dropout": "0.1"}, "dropout"),
                                             ({"bidirectional": "yes"}, "bidirectional: expected True or False")])
def test_bad_model_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace(")", r"\)")):
        hpcrnn.Model(cell="lstm", **kwargs)


def test_bad_step_or_indices():
    model, x, y, lengths = small_problem("rnn", dropout=0.5)
    with pytest.raises(ValueError, match="sample_indices: expected integers of shape"):
        loss_sum(model, x, y, lengths, 0, np.arange(2))
    with pytest.raises(ValueError, match="step: expected an integer >= 0"):
        loss_sum(model, x, y, lengths, -1, np.arange(3))


def test_config_keys():
    config = load_config(None, ["model.dropout=0.2", "model.bidirectional=true"])
    assert config.model.dropout == 0.2 and config.model.bidirectional is True
    assert load_config(None, []).model.dropout == 0.0
    for value, fragment in (("1", "model.dropout: must be in [0, 1)"), ("-0.5", "model.dropout: must be in"),
                            ("x", "model.dropout: expected a number")):
        with pytest.raises(ConfigError) as error:
            load_config(None, [f"model.dropout={value}"])
        assert fragment in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="model.bidirectional: expected true or false"):
        load_config(None, ["model.bidirectional=maybe"])
