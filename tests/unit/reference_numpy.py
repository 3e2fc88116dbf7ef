"""Plain NumPy references of the cells, the head and the losses, written straight from the equations in
docs/kernels.md (batch-first, one sample at a time, float64). Slow on purpose: they are the spec, not a kernel."""
import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_step(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, g, o = np.split(W_ih @ x + b_ih + W_hh @ h + b_hh, 4)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh):
    x_r, x_z, x_n = np.split(W_ih @ x + b_ih, 3)
    h_r, h_z, h_n = np.split(W_hh @ h + b_hh, 3)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


def rnn_step(x, h, W_ih, W_hh, b_ih, b_hh):
    return np.tanh(W_ih @ x + b_ih + W_hh @ h + b_hh)


def gated_step(x, h, W_ih, W_hh, b_ih, b_hh=None):
    H = h.shape[0]
    W_hi, W_hf, W_ho, W_hc = np.split(W_hh, 4)
    x_i, x_f, x_o, x_c = np.split(W_ih @ x + b_ih, 4)
    i, f, o = sigmoid(x_i + W_hi @ h), sigmoid(x_f + W_hf @ h), sigmoid(x_o + W_ho @ h)
    candidate = np.tanh(x_c + W_hc @ (f * h))
    assert candidate.shape == (H,)
    return o * np.tanh(h) + i * candidate


STEPS = {"lstm": lstm_step, "gru": gru_step, "rnn": rnn_step, "gated": gated_step}


def run_layers(cell, params, x, num_layers, lengths=None, h0=None):
    """Top layer's outputs [B, T, H] (0 past each length) and the final state per layer.
    params: state_dict-style dict; h0 like Model's (per layer h, or (h, c) for lstm)."""
    B, T, _ = x.shape
    H = params["rnn.weight_hh_l0"].shape[1]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    inputs = np.asarray(x, np.float64)
    finals = []
    for layer in range(num_layers):
        weights = [np.asarray(params.get(f"rnn.{k}_l{layer}", np.zeros(0)), np.float64)
                   for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        outputs = np.zeros((B, T, H))
        layer_final = []
        for b in range(B):
            state = _initial(cell, h0, layer, b, H)
            for t in range(lengths[b]):
                state = STEPS[cell](inputs[b, t], state, *weights)
                outputs[b, t] = state[0] if cell == "lstm" else state
            layer_final.append(state)
        finals.append(_stack_states(cell, layer_final))
        inputs = outputs
    return inputs, finals


def _initial(cell, h0, layer, b, H):
    if h0 is None:
        return (np.zeros(H), np.zeros(H)) if cell == "lstm" else np.zeros(H)
    if cell == "lstm":
        return np.asarray(h0[layer][0][b], np.float64), np.asarray(h0[layer][1][b], np.float64)
    return np.asarray(h0[layer][b], np.float64)


def _stack_states(cell, states):
    if cell == "lstm":
        return np.stack([s[0] for s in states]), np.stack([s[1] for s in states])
    return np.stack(states)


def predict(cell, params, x, num_layers, head, lengths=None, h0=None):
    """Head outputs: [B, O] from each sample's last valid step, or [B, T, O] (0 at padded steps)."""
    outputs, finals = run_layers(cell, params, x, num_layers, lengths, h0)
    W, b = np.asarray(params["head.weight"], np.float64), np.asarray(params["head.bias"], np.float64)
    if head == "last":
        top = finals[-1][0] if cell == "lstm" else finals[-1]
        return top @ W.T + b, finals
    B, T, _ = x.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    y_hat = outputs @ W.T + b
    y_hat[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return y_hat, finals


def loss(kind, y_hat, y, lengths=None):
    """Mean over samples of each sample's loss: its mean over valid elements (mse, mae), or softmax CE."""
    if kind == "cross_entropy":
        shifted = y_hat - y_hat.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_softmax[np.arange(len(y)), y].mean()
    error = (y_hat - y) ** 2 if kind == "mse" else np.abs(y_hat - y)
    if y_hat.ndim == 2:
        return error.mean()
    B, T, O = y_hat.shape
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    valid = np.arange(T)[None, :] < lengths[:, None]
    return np.mean([error[b][valid[b]].sum() / (lengths[b] * O) for b in range(B)])
