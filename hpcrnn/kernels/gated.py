"""Kernels of the `gated` cell (gate order i, f, o, c; no bias_hh, no cell state): forward, then BPTT.

Legend: T = time steps, B = batch, I = layer input size, H = hidden size, TB = T*B rows (time-major).
  X [TB, I] layer input          Hs [T+1, B, H] states, Hs[0] = initial h     lengths [B] valid steps
  A [T, B, 4H] gates: pre-activations after the GEMMs, activations after the step
  S [T+1, B, H]: S[t+1] = f⊙h_t, the input of the candidate's recurrent GEMM, kept for BPTT
  i, f, o = σ(W_i* x + W_h* h + b_*)   c = tanh(W_ic x + W_hc (f⊙h) + b_c)   h' = o⊙tanh(h) + i⊙c
W_hh rows 0:3H multiply h, rows 3H:4H multiply f⊙h. Steps at or past a row's length leave its state unchanged.
"""
import numpy as np

from hpcrnn.kernels.common import (add_weight_grads, freeze_row, freeze_row_backward, gemm, kernel,
                                   project_inputs, sigmoid, tanh)


@kernel
def _gates(S, A, Hs, t, b):
    """First half of step t, row b: i, f, o activations in place in a [4H]; fh [H] = f⊙h_prev.
    (Row kernels slice their rows themselves: ROW_VIEWS in common.py.)"""
    fh, a, h_prev = S[t + 1, b], A[t, b], Hs[t, b]
    H = fh.shape[0]
    for j in range(H):
        i = sigmoid(a[j])
        f = sigmoid(a[H + j])
        a[j], a[H + j], a[2 * H + j] = i, f, sigmoid(a[2 * H + j])
        fh[j] = f * h_prev[j]


@kernel
def _step(Hs, A, t, b):
    """Second half of step t, row b: candidate c = tanh in place in a[3H:4H]; h [H] out."""
    h, a, h_prev = Hs[t + 1, b], A[t, b], Hs[t, b]
    H = h.shape[0]
    for j in range(H):
        c = tanh(a[3 * H + j])
        a[3 * H + j] = c
        h[j] = a[2 * H + j] * tanh(h_prev[j]) + a[j] * c


@kernel
def _step_backward(dG, dH_prev, dH, dHs, A, Hs, t, b):
    """Row b of step t. dg [4H]: i, o, c blocks out (f follows the candidate's GEMM); dh_prev [H] := the
    direct term."""
    dg, dh_prev, dh, dh_above, a, h_prev = dG[t, b], dH_prev[b], dH[b], dHs[t, b], A[t, b], Hs[t, b]
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        i, o, c = a[j], a[2 * H + j], a[3 * H + j]
        th = tanh(h_prev[j])
        dht = dh[j] + dh_above[j]
        dg[j] = dht * c * i * (one - i)
        dg[2 * H + j] = dht * th * o * (one - o)
        dg[3 * H + j] = dht * i * (one - c * c)
        dh_prev[j] = dht * o * (one - th * th)


@kernel
def _fh_backward(dG, dH_prev, dFH, A, Hs, t, b):
    """Gradient through fh = f⊙h_prev, row b of step t: dg's f block out, dh_prev [H] += dfh⊙f."""
    dg, dh_prev, dfh, a, h_prev = dG[t, b], dH_prev[b], dFH[b], A[t, b], Hs[t, b]
    H = dfh.shape[0]
    one = dfh.dtype.type(1.0)
    for j in range(H):
        f = a[H + j]
        dg[H + j] = dfh[j] * h_prev[j] * f * (one - f)
        dh_prev[j] += dfh[j] * f


@kernel
def forward(Hs, S, A, X, W_ih, W_hh, b_ih, b_hh, lengths):
    """Runs all T steps. Hs, S, A out (Hs[0] preset by the caller); W_ih [4H, I], W_hh [4H, H]; b_hh empty."""
    T, B, GH = A.shape
    H = GH // 4
    project_inputs(A.reshape(T * B, GH), X, W_ih, b_ih, b_hh)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # [H, 4H]: BLAS runs small h @ W_hh^T products faster untransposed
    for t in range(T):
        gemm(A[t][:, : 3 * H], Hs[t], W_hh_T[:, : 3 * H], False, False, 1.0)
        for b in range(B):
            if t < lengths[b]:
                _gates(S, A, Hs, t, b)
            else:
                S[t + 1, b] = 0.0  # read by the GEMMs below and in BPTT: keep it finite
        gemm(A[t][:, 3 * H:], S[t + 1], W_hh_T[:, 3 * H:], False, False, 1.0)
        for b in range(B):
            if t < lengths[b]:
                _step(Hs, A, t, b)
            else:
                freeze_row(Hs[t + 1, b], Hs[t, b])


@kernel
def backward(dX, dW_ih, dW_hh, db_ih, db_hh, dG, dh, dh_prev, dc, dHs, Hs, S, A, X, W_ih, W_hh, lengths):
    """BPTT, last step first. ADDS into dX [TB, I] (skipped when it has no rows), dW_ih, dW_hh, db_ih.
    dh [B, H]: gradient wrt the final h on entry, then overwritten, as are dh_prev [B, H] and dG [T, B, 4H];
    dc, db_hh unused. dHs [T, B, H]: gradient reaching each step's h from above."""
    T, B, GH = dG.shape
    H = GH // 4
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < lengths[b]:
                _step_backward(dG, dh_prev, dh, dHs, A, Hs, t, b)
            else:
                freeze_row_backward(dG[t, b], dh_prev[b], dh[b], dHs[t, b])
        gemm(dh, dG[t][:, 3 * H:], W_hh[3 * H:], False, False, 0.0)  # dh := gradient wrt f⊙h_prev
        for b in range(B):
            if t < lengths[b]:
                _fh_backward(dG, dh_prev, dh, A, Hs, t, b)
        gemm(dh_prev, dG[t][:, : 3 * H], W_hh[: 3 * H], False, False, 1.0)
        dh, dh_prev = dh_prev, dh
    dG2 = dG.reshape(T * B, GH)
    add_weight_grads(dW_ih, db_ih, dG2, X)
    add_weight_grads(dW_hh[: 3 * H], db_hh, dG2[:, : 3 * H], Hs.reshape((T + 1) * B, H)[: T * B])
    add_weight_grads(dW_hh[3 * H:], db_hh, dG2[:, 3 * H:], S.reshape((T + 1) * B, H)[B:])
    if dX.shape[0] > 0:
        gemm(dX, dG2, W_ih, False, False, 1.0)
