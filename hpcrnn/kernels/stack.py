"""Runs a stack of recurrent layers plus the linear head over buffers kept between calls. No validation here:
hpcrnn.model checks inputs and owns the parameters; this module only sequences the kernels.

Legend: T = time steps, B = batch, F = input features, H = hidden size, L = layers, O = outputs,
N = head rows (B for head "last", T*B time-major for head "sequence").
A layer's parameters and gradients are 4-tuples of views (W_ih, W_hh, b_ih, b_hh); b_hh is empty for `gated`.
"""
import numpy as np

from hpcrnn.kernels import CELLS, head


class Workspace:
    """Buffers for one (B, T): time-major input, each layer's states and gates, BPTT and head scratch."""

    def __init__(self, cell, batch, steps, features, hidden, layers, outputs, sequence, dtype):
        spec = CELLS[cell]
        T, B, H = steps, batch, hidden
        self.x = np.zeros((T, B, features), dtype)
        self.Hs = [np.zeros((T + 1, B, H), dtype) for _ in range(layers)]
        aux_shape = (T + 1, B, H) if spec.aux_state else (1, 1, 1)
        self.S = [np.zeros(aux_shape, dtype) for _ in range(layers)]
        self.A = [np.zeros((T, B, spec.gates * H), dtype) for _ in range(layers)]
        self.dG = np.zeros((T, B, spec.grad_gates * H), dtype)
        self.dHs = [np.zeros((T, B, H), dtype) for _ in range(2)]
        self.zeros = np.zeros((T, B, H), dtype)  # the gradient from above each step under head "last": none
        self.dh, self.dh_prev, self.dc = (np.zeros((B, H), dtype) for _ in range(3))
        rows = T * B if sequence else B
        self.y, self.dy, self.target = (np.zeros((rows, outputs), dtype) for _ in range(3))
        self.weight = np.zeros(rows, dtype)
        self.no_dx = np.zeros((0, features), dtype)


def load_inputs(ws, x, lengths):
    """Copies x [B, T, F] into the time-major buffer; padded steps become 0 so they cannot reach a gradient."""
    ws.x[...] = x.transpose(1, 0, 2)
    for b in np.flatnonzero(lengths < x.shape[1]):
        ws.x[lengths[b]:, b] = 0


def forward(ws, cell, layers, lengths, h0=None):
    """All layers, all steps. h0: None (zeros) or a per-layer list of h [B, H] (lstm: (h, c) pairs)."""
    spec = CELLS[cell]
    T, B, F = ws.x.shape
    inputs = ws.x.reshape(T * B, F)
    for layer, (W_ih, W_hh, b_ih, b_hh) in enumerate(layers):
        Hs, S = ws.Hs[layer], ws.S[layer]
        state = None if h0 is None else h0[layer]
        Hs[0] = 0 if state is None else (state[0] if spec.carries_c else state)
        if spec.carries_c:
            S[0] = 0 if state is None else state[1]
        spec.forward(Hs, S, ws.A[layer], inputs, W_ih, W_hh, b_ih, b_hh, lengths)
        inputs = Hs[1:].reshape(T * B, -1)


def final_state(ws, cell):
    """Copies of each layer's state after the last valid step (lstm: (h, c) pairs)."""
    if CELLS[cell].carries_c:
        return [(Hs[-1].copy(), S[-1].copy()) for Hs, S in zip(ws.Hs, ws.S)]
    return [Hs[-1].copy() for Hs in ws.Hs]


def head_inputs(ws, sequence):
    """The states the head reads: [B, H] final (= last valid step's) states, or [T*B, H] every step's."""
    top = ws.Hs[-1]
    return top[1:].reshape(-1, top.shape[2]) if sequence else top[-1]


def head_forward(ws, sequence, W, b):
    """ws.y [N, O] = head outputs."""
    head.linear_forward(ws.y, head_inputs(ws, sequence), W, b)
    return ws.y


def set_targets(ws, y, lengths, sequence, loss):
    """Time-major targets and per-row weights (each row's share of its sample's mean loss)."""
    outputs = ws.y.shape[1]
    if loss == "cross_entropy":
        return
    if not sequence:
        ws.target[...] = y
        ws.weight[...] = 1.0 / outputs
        return
    T, B = ws.x.shape[:2]
    ws.target.reshape(T, B, outputs)[...] = y.transpose(1, 0, 2)
    steps = np.arange(T)[:, None]
    ws.weight.reshape(T, B)[...] = np.where(steps < lengths[None, :], 1.0 / (lengths[None, :] * outputs), 0.0)


def loss_forward(ws, y, loss, scale):
    """Returns (loss sum over samples, correct count or 0); writes scale * d(loss sum)/d(outputs) into ws.dy."""
    if loss == "cross_entropy":
        return head.cross_entropy_loss(ws.dy, ws.y, y, scale)
    return head.regression_loss(ws.dy, ws.y, ws.target, ws.weight, loss == "mse", scale), 0


def backward(ws, cell, sequence, layers, grads, head_params, head_grads, lengths, on_layer_done=None):
    """BPTT through head and layers from ws.dy; ADDS into the gradient views; calls on_layer_done(layer)
    after each layer's gradients are complete."""
    spec = CELLS[cell]
    T, B, F = ws.x.shape
    top_above = ws.dHs[0] if sequence else ws.zeros  # head "last" feeds only the final state's gradient
    if sequence:
        top_above[...] = 0
    ws.dh[...] = 0
    head_dinputs = top_above.reshape(T * B, -1) if sequence else ws.dh
    head.linear_backward(*head_grads, head_dinputs, ws.dy, head_inputs(ws, sequence), head_params[0])
    above = top_above
    for layer in range(len(layers) - 1, -1, -1):
        W_ih, W_hh = layers[layer][:2]
        dW_ih, dW_hh, db_ih, db_hh = grads[layer]
        if layer > 0:
            dX = ws.dHs[(len(layers) - layer) % 2]
            dX[...] = 0
            dX2 = dX.reshape(T * B, -1)
            inputs = ws.Hs[layer - 1][1:].reshape(T * B, -1)
        else:
            dX2, inputs = ws.no_dx, ws.x.reshape(T * B, F)
        if layer < len(layers) - 1:
            ws.dh[...] = 0
        ws.dc[...] = 0
        spec.backward(dX2, dW_ih, dW_hh, db_ih, db_hh, ws.dG, ws.dh, ws.dh_prev, ws.dc, above,
                      ws.Hs[layer], ws.S[layer], ws.A[layer], inputs, W_ih, W_hh, lengths)
        above = dX2.reshape(T, B, -1) if layer > 0 else None
        if on_layer_done is not None:
            on_layer_done(layer)
