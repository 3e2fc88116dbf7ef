"""Runs a stack of recurrent layers plus the linear head over buffers kept between calls. No validation here:
hpcrnn.model checks inputs and owns the parameters; this module only sequences the kernels.

Legend: T = time steps, B = batch, F = input features, H = hidden size, L = layers, O = outputs,
N = head rows (B for head "last", T*B time-major for head "sequence").
A layer's parameters and gradients are 4-tuples of views (W_ih, W_hh, b_ih, b_hh); b_hh is empty for `gated`;
bidirectional stacks pass a (forward, reverse) pair of them per layer.
Dropout (training only) multiplies each layer's output but the last by a mask M [T, B, W] (kernels/dropout.py)
before the next layer reads it. Bidirectional layers run the reverse direction over each sample's valid steps
reversed (`Reversal`) and write both directions into one output [T, B, 2H] (0 at padded steps, as torch's
packed sequences pad).
"""
import numpy as np

from hpcrnn.kernels import CELLS, head


class Workspace:
    """Buffers for one (B, T): time-major input, each layer's states and gates, BPTT and head scratch; with
    dropout the masks and masked layer inputs, when bidirectional the reverse direction's and the outputs."""

    def __init__(self, cell, batch, steps, features, hidden, layers, outputs, sequence, dtype,
                 dropout=False, bidirectional=False):
        spec = CELLS[cell]
        T, B, H = steps, batch, hidden
        W = 2 * H if bidirectional else H   # width of a layer's output
        self.x = np.zeros((T, B, features), dtype)
        self.Hs = [np.zeros((T + 1, B, H), dtype) for _ in range(layers)]
        aux_shape = (T + 1, B, H) if spec.aux_state else (1, 1, 1)
        self.S = [np.zeros(aux_shape, dtype) for _ in range(layers)]
        self.A = [np.zeros((T, B, spec.gates * H), dtype) for _ in range(layers)]
        self.dG = np.zeros((T, B, spec.grad_gates * H), dtype)
        self.dHs = [np.zeros((T, B, W), dtype) for _ in range(2)]
        self.zeros = np.zeros((T, B, H), dtype)  # the gradient from above each step under head "last": none
        self.dh, self.dh_prev, self.dc = (np.zeros((B, H), dtype) for _ in range(3))
        rows = T * B if sequence else B
        self.y, self.dy, self.target = (np.zeros((rows, outputs), dtype) for _ in range(3))
        self.weight = np.zeros(rows, dtype)
        self.no_dx = np.zeros((0, features), dtype)
        self.inputs = [None] * layers   # [TB, I] matrix each layer read in the last forward
        self.masks = [None] * layers    # dropout mask of each layer's input (layers > 0) in the last forward
        if dropout:
            # layer 0's input (the data) is never dropped: no buffers for it
            self.M = [None] + [np.zeros((T, B, W), dtype) for _ in range(1, layers)]
            self.dropped = [None] + [np.zeros((T, B, W), dtype) for _ in range(1, layers)]
        if bidirectional:
            self.Hs_r = [np.zeros((T + 1, B, H), dtype) for _ in range(layers)]
            self.S_r = [np.zeros(aux_shape, dtype) for _ in range(layers)]
            self.A_r = [np.zeros((T, B, spec.gates * H), dtype) for _ in range(layers)]
            self.x_r = [np.zeros((T, B, features if layer == 0 else W), dtype) for layer in range(layers)]
            self.out = [np.zeros((T, B, W), dtype) for _ in range(layers)]
            self.last, self.dlast = np.zeros((B, W), dtype), np.zeros((B, W), dtype)
            self.above = [np.zeros((T, B, H), dtype) for _ in range(2)]
            self.dx_r = np.zeros((T, B, W), dtype)   # the reverse direction's input gradient, reversed


class Reversal:
    """Each sample's valid steps in reverse order: apply(dst, src) sets dst[t, b] = src[len_b - 1 - t, b] for
    t < len_b and 0 past it (an involution on the valid steps). lengths [B]."""

    def __init__(self, lengths, steps):
        t = np.arange(steps)[:, None]
        self.valid = t < lengths[None, :]
        self.order = np.where(self.valid, lengths[None, :] - 1 - t, t)
        self.cols = np.broadcast_to(np.arange(len(lengths))[None, :], self.order.shape)

    def apply(self, dst, src, add=False):
        gathered = np.where(self.valid[:, :, None], src[self.order, self.cols], 0)
        if add:
            dst += gathered
        else:
            dst[...] = gathered


def load_inputs(ws, x, lengths):
    """Copies x [B, T, F] into the time-major buffer; padded steps become 0 so they cannot reach a gradient."""
    ws.x[...] = x.transpose(1, 0, 2)
    for b in np.flatnonzero(lengths < x.shape[1]):
        ws.x[lengths[b]:, b] = 0


def forward(ws, cell, layers, lengths, h0=None, masks=None, reversal=None):
    """All layers, all steps. h0: None (zeros) or a per-layer list of h [B, H] (lstm: (h, c) pairs).
    masks: None, or a dropout mask per layer (None for layer 0) multiplying the layer's input. reversal: a
    `Reversal` of these lengths for a bidirectional stack (then `layers` holds (forward, reverse) pairs)."""
    spec = CELLS[cell]
    T, B, F = ws.x.shape
    inputs = ws.x.reshape(T * B, F)
    for layer, params in enumerate(layers):
        if masks is not None and masks[layer] is not None:
            np.multiply(inputs.reshape(masks[layer].shape), masks[layer], out=ws.dropped[layer])
            inputs = ws.dropped[layer].reshape(T * B, -1)
        ws.inputs[layer] = inputs
        ws.masks[layer] = None if masks is None else masks[layer]
        if reversal is not None:
            inputs = _bidirectional_forward(ws, spec, layer, params, inputs, lengths, reversal)
            continue
        Hs, S = ws.Hs[layer], ws.S[layer]
        state = None if h0 is None else h0[layer]
        Hs[0] = 0 if state is None else (state[0] if spec.carries_c else state)
        if spec.carries_c:
            S[0] = 0 if state is None else state[1]
        spec.forward(Hs, S, ws.A[layer], inputs, *params, lengths)
        inputs = Hs[1:].reshape(T * B, -1)


def _bidirectional_forward(ws, spec, layer, params, inputs, lengths, reversal):
    """Both directions of one layer from zero states; returns its output [TB, 2H] (0 at padded steps)."""
    T, B = ws.x.shape[:2]
    H = ws.Hs[layer].shape[2]
    reversal.apply(ws.x_r[layer], inputs.reshape(T, B, -1))
    out = ws.out[layer]
    for Hs, S, A, X, weights in ((ws.Hs[layer], ws.S[layer], ws.A[layer], inputs, params[0]),
                                 (ws.Hs_r[layer], ws.S_r[layer], ws.A_r[layer],
                                  ws.x_r[layer].reshape(T * B, -1), params[1])):
        Hs[0] = 0
        S[0] = 0
        spec.forward(Hs, S, A, X, *weights, lengths)
    np.multiply(ws.Hs[layer][1:], reversal.valid[:, :, None], out=out[:, :, :H])
    reversal.apply(out[:, :, H:], ws.Hs_r[layer][1:])
    return out.reshape(T * B, -1)


def final_state(ws, cell):
    """Copies of each layer's state after the last valid step (lstm: (h, c) pairs)."""
    if CELLS[cell].carries_c:
        return [(Hs[-1].copy(), S[-1].copy()) for Hs, S in zip(ws.Hs, ws.S)]
    return [Hs[-1].copy() for Hs in ws.Hs]


def head_inputs(ws, sequence):
    """The states the head reads: [B, H] final (= last valid step's) states, or [T*B, H] every step's;
    bidirectional: the output [T*B, 2H], or each sample's output at its last valid step [B, 2H]."""
    if hasattr(ws, "out"):
        return ws.out[-1].reshape(-1, ws.out[-1].shape[2]) if sequence else ws.last
    top = ws.Hs[-1]
    return top[1:].reshape(-1, top.shape[2]) if sequence else top[-1]


def head_forward(ws, sequence, W, b, lengths):
    """ws.y [N, O] = head outputs."""
    if hasattr(ws, "out") and not sequence:
        ws.last[...] = ws.out[-1][lengths - 1, np.arange(len(lengths))]
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


def backward(ws, cell, sequence, layers, grads, head_params, head_grads, lengths, on_layer_done=None,
             reversal=None):
    """BPTT through head and layers from ws.dy; ADDS into the gradient views; calls on_layer_done(layer)
    after each layer's gradients are complete. The dropout masks and the inputs are those of the last forward."""
    if reversal is not None:
        return _bidirectional_backward(ws, CELLS[cell], sequence, layers, grads, head_params, head_grads,
                                       lengths, on_layer_done, reversal)
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
        else:
            dX2 = ws.no_dx
        if layer < len(layers) - 1:
            ws.dh[...] = 0
        ws.dc[...] = 0
        spec.backward(dX2, dW_ih, dW_hh, db_ih, db_hh, ws.dG, ws.dh, ws.dh_prev, ws.dc, above,
                      ws.Hs[layer], ws.S[layer], ws.A[layer], ws.inputs[layer], W_ih, W_hh, lengths)
        above = dX2.reshape(T, B, -1) if layer > 0 else None
        if ws.masks[layer] is not None:
            above *= ws.masks[layer]   # through the dropout of the layer below's output
        if on_layer_done is not None:
            on_layer_done(layer)


def _bidirectional_backward(ws, spec, sequence, layers, grads, head_params, head_grads, lengths, on_layer_done,
                            reversal):
    """backward() of a bidirectional stack: each layer's output gradient dOut [T, B, 2H] is split into the
    forward direction's (time order) and the reverse direction's (reversed), whose input gradients add up."""
    T, B = ws.x.shape[:2]
    H = ws.Hs[0].shape[2]
    d_out = ws.dHs[0]
    d_out[...] = 0
    if sequence:
        head.linear_backward(*head_grads, d_out.reshape(T * B, -1), ws.dy, head_inputs(ws, sequence),
                             head_params[0])
    else:
        ws.dlast[...] = 0
        head.linear_backward(*head_grads, ws.dlast, ws.dy, ws.last, head_params[0])
        d_out[lengths - 1, np.arange(B)] = ws.dlast
    for layer in range(len(layers) - 1, -1, -1):
        d_in = ws.dHs[(len(layers) - layer) % 2]
        np.multiply(d_out[:, :, :H], reversal.valid[:, :, None], out=ws.above[0])
        reversal.apply(ws.above[1], d_out[:, :, H:])
        inputs_r = ws.x_r[layer].reshape(T * B, -1)
        for direction, (Hs, S, A, X, dX) in enumerate(
                ((ws.Hs[layer], ws.S[layer], ws.A[layer], ws.inputs[layer], d_in),
                 (ws.Hs_r[layer], ws.S_r[layer], ws.A_r[layer], inputs_r, ws.dx_r))):
            dX2 = ws.no_dx
            if layer > 0:
                dX[...] = 0
                dX2 = dX.reshape(T * B, -1)
            ws.dh[...] = 0
            ws.dc[...] = 0
            spec.backward(dX2, *grads[layer][direction], ws.dG, ws.dh, ws.dh_prev, ws.dc, ws.above[direction],
                          Hs, S, A, X, *layers[layer][direction][:2], lengths)
        if layer > 0:
            reversal.apply(d_in, ws.dx_r, add=True)
            if ws.masks[layer] is not None:
                d_in *= ws.masks[layer]
        d_out = d_in
        if on_layer_done is not None:
            on_layer_done(layer)
