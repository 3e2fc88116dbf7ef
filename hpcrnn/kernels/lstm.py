"""LSTM layer kernels with PyTorch nn.LSTM's equations and gate order (i, f, g, o): forward, then BPTT.

Legend: T = time steps, B = batch, I = layer input size, H = hidden size, TB = T*B rows (time-major).
  X [TB, I] layer input          Hs [T+1, B, H] states, Hs[0] = initial h     lengths [B] valid steps
  Cs [T+1, B, H] cell states, Cs[0] = initial c
  A [T, B, 4H] gates: pre-activations after the GEMMs, activations after the step
  i, f, o = σ(W_i* x + b_i* + W_h* h + b_h*)   g = tanh(W_ig x + b_ig + W_hg h + b_hg)
  c' = f⊙c + i⊙g                              h' = o⊙tanh(c')
Steps at or past a row's length leave its state unchanged (and pass its gradient straight through).
"""
import numpy as np

from hpcrnn.kernels.common import (freeze_row, freeze_row_backward, gemm, kernel, layer_grads,
                                   project_inputs, sigmoid, tanh)


@kernel
def _step(Hs, Cs, A, t, b):
    """Row b of step t. h, c [H] out; a [4H] pre-activations in, activations out; c_prev [H].
    (Row kernels slice their rows themselves: see ROW_VIEWS in common.py.)"""
    h, c, a, c_prev = Hs[t + 1, b], Cs[t + 1, b], A[t, b], Cs[t, b]
    H = h.shape[0]
    for j in range(H):
        i = sigmoid(a[j])
        f = sigmoid(a[H + j])
        g = tanh(a[2 * H + j])
        o = sigmoid(a[3 * H + j])
        a[j], a[H + j], a[2 * H + j], a[3 * H + j] = i, f, g, o
        cj = f * c_prev[j] + i * g
        c[j] = cj
        h[j] = o * tanh(cj)


@kernel
def _step_backward(dG, dH_prev, dC, dH, dHs, A, Cs, t, b):
    """Row b of step t. dg [4H] gate pre-activation grads out; dh_prev [H] := 0 (the recurrent GEMM adds in);
    dc [H] carry, gradient wrt c_t in, wrt c_{t-1} out; dh, dh_above [H] gradient wrt h_t (carry, from above).
    Three short loops rather than one: each touches fewer arrays, so LLVM's runtime overlap checks before each
    vectorised loop stay few (one loop over all eight arrays ran 1.6x slower at H = 64)."""
    dg, dh_prev, dc, dh, dh_above = dG[t, b], dH_prev[b], dC[b], dH[b], dHs[t, b]
    a, c, c_prev = A[t, b], Cs[t + 1, b], Cs[t, b]
    H = dc.shape[0]
    one = dc.dtype.type(1.0)
    for j in range(H):   # the o block, and the gradient wrt c_t parked in dh_prev
        o = a[3 * H + j]
        tc = tanh(c[j])
        dht = dh[j] + dh_above[j]
        dg[3 * H + j] = dht * tc * o * (one - o)
        dh_prev[j] = dc[j] + dht * o * (one - tc * tc)
    for j in range(H):
        i, f, g = a[j], a[H + j], a[2 * H + j]
        dct = dh_prev[j]
        dg[j] = dct * g * i * (one - i)
        dg[H + j] = dct * c_prev[j] * f * (one - f)
        dg[2 * H + j] = dct * i * (one - g * g)
        dc[j] = dct * f
    for j in range(H):
        dh_prev[j] = 0.0


@kernel
def forward(Hs, Cs, A, X, W_ih, W_hh, b_ih, b_hh, lengths):
    """Runs all T steps. Hs, Cs, A out (Hs[0], Cs[0] preset by the caller); W_ih [4H, I], W_hh [4H, H]."""
    T, B, GH = A.shape
    project_inputs(A.reshape(T * B, GH), X, W_ih, b_ih, b_hh)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # [H, 4H]: BLAS runs small h @ W_hh^T products faster untransposed
    for t in range(T):
        gemm(A[t], Hs[t], W_hh_T, False, False, 1.0)
        for b in range(B):
            if t < lengths[b]:
                _step(Hs, Cs, A, t, b)
            else:
                freeze_row(Hs[t + 1, b], Hs[t, b])
                freeze_row(Cs[t + 1, b], Cs[t, b])


@kernel
def backward(dX, dW_ih, dW_hh, db_ih, db_hh, dG, dh, dh_prev, dc, dHs, Hs, Cs, A, X, W_ih, W_hh, lengths):
    """BPTT, last step first. ADDS into dX [TB, I] (skipped when it has no rows), dW_ih, dW_hh, db_ih, db_hh.
    dh [B, H]: gradient wrt the final h on entry, dc [B, H] wrt the final c; both are then overwritten, as are
    the workspaces dh_prev [B, H] and dG [T, B, 4H]. dHs [T, B, H]: gradient reaching each step's h from above."""
    T, B, GH = dG.shape
    H = GH // 4
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < lengths[b]:
                _step_backward(dG, dh_prev, dc, dh, dHs, A, Cs, t, b)
            else:
                freeze_row_backward(dG[t, b], dh_prev[b], dh[b], dHs[t, b])
        gemm(dh_prev, dG[t], W_hh, False, False, 1.0)
        dh, dh_prev = dh_prev, dh
    layer_grads(dX, dW_ih, dW_hh, db_ih, db_hh, dG.reshape(T * B, GH), X,
                Hs.reshape((T + 1) * B, H)[: T * B], W_ih)
