"""GRU layer kernels with PyTorch nn.GRU's equations and gate order (r, z, n): forward, then BPTT.

Legend: T = time steps, B = batch, I = layer input size, H = hidden size, TB = T*B rows (time-major).
  X [TB, I] layer input          Hs [T+1, B, H] states, Hs[0] = initial h     lengths [B] valid steps
  A [T, B, 3H] gates: pre-activations (x part, + h part for r, z) after the GEMMs, activations after the step
  S [T+1, B, H]: S[t+1] = W_hn h_t + b_hn, the candidate's recurrent part, kept for BPTT
  dG [T, B, 4H] gradient blocks (r, z, n_h, n_x): rows 0:3H pair with W_hh, rows (0:2H, 3H:4H) with W_ih
  r, z = σ(W_i* x + b_i* + W_h* h + b_h*)   n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))   h' = (1-z)⊙n + z⊙h
Steps at or past a row's length leave its state unchanged (and pass its gradient straight through).
"""
import numpy as np

from hpcrnn.kernels.common import (add_weight_grads, freeze_row, freeze_row_backward, gemm, kernel,
                                   project_inputs, sigmoid, tanh)


@kernel
def _step(Hs, S, A, b_hn, t, b):
    """Row b of step t. h [H] out; hn [H] W_hn h_prev in, + b_hn out; a [3H] pre-activations in,
    activations out; h_prev, b_hn [H]. (Row kernels slice their rows themselves: ROW_VIEWS in common.py.)"""
    h, hn, a, h_prev = Hs[t + 1, b], S[t + 1, b], A[t, b], Hs[t, b]
    H = h.shape[0]
    one = h.dtype.type(1.0)
    for j in range(H):
        r = sigmoid(a[j])
        z = sigmoid(a[H + j])
        hnj = hn[j] + b_hn[j]
        n = tanh(a[2 * H + j] + r * hnj)
        a[j], a[H + j], a[2 * H + j], hn[j] = r, z, n, hnj
        h[j] = (one - z) * n + z * h_prev[j]


@kernel
def _step_backward(dG, dH_prev, dH, dHs, A, S, Hs, t, b):
    """Row b of step t. dg [4H] gradient blocks out; dh_prev [H] := the direct term z⊙dh (the recurrent GEMM
    adds in)."""
    dg, dh_prev, dh, dh_above = dG[t, b], dH_prev[b], dH[b], dHs[t, b]
    a, hn, h_prev = A[t, b], S[t + 1, b], Hs[t, b]
    H = dh.shape[0]
    one = dh.dtype.type(1.0)
    for j in range(H):
        r, z, n = a[j], a[H + j], a[2 * H + j]
        dht = dh[j] + dh_above[j]
        dn = dht * (one - z) * (one - n * n)
        dg[j] = dn * hn[j] * r * (one - r)
        dg[H + j] = dht * (h_prev[j] - n) * z * (one - z)
        dg[2 * H + j] = dn * r
        dg[3 * H + j] = dn
        dh_prev[j] = dht * z


@kernel
def forward(Hs, S, A, X, W_ih, W_hh, b_ih, b_hh, lengths):
    """Runs all T steps. Hs, S, A out (Hs[0] preset by the caller); W_ih [3H, I], W_hh [3H, H]."""
    T, B, GH = A.shape
    H = GH // 3
    project_inputs(A.reshape(T * B, GH), X, W_ih, b_ih, b_hh[: 2 * H])
    W_hh_T = np.ascontiguousarray(W_hh.T)  # [H, 3H]: BLAS runs small h @ W_hh^T products faster untransposed
    for t in range(T):
        gemm(A[t][:, : 2 * H], Hs[t], W_hh_T[:, : 2 * H], False, False, 1.0)
        gemm(S[t + 1], Hs[t], W_hh_T[:, 2 * H:], False, False, 0.0)
        for b in range(B):
            if t < lengths[b]:
                _step(Hs, S, A, b_hh[2 * H:], t, b)
            else:
                freeze_row(Hs[t + 1, b], Hs[t, b])


@kernel
def backward(dX, dW_ih, dW_hh, db_ih, db_hh, dG, dh, dh_prev, dc, dHs, Hs, S, A, X, W_ih, W_hh, lengths):
    """BPTT, last step first. ADDS into dX [TB, I] (skipped when it has no rows), dW_ih, dW_hh, db_ih, db_hh.
    dh [B, H]: gradient wrt the final h on entry, then overwritten, as are dh_prev [B, H] and dG [T, B, 4H];
    dc unused. dHs [T, B, H]: gradient reaching each step's h from above."""
    T, B, G4 = dG.shape
    H = G4 // 4
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < lengths[b]:
                _step_backward(dG, dh_prev, dh, dHs, A, S, Hs, t, b)
            else:
                freeze_row_backward(dG[t, b], dh_prev[b], dh[b], dHs[t, b])
        gemm(dh_prev, dG[t][:, : 3 * H], W_hh, False, False, 1.0)
        dh, dh_prev = dh_prev, dh
    dG2 = dG.reshape(T * B, G4)
    add_weight_grads(dW_hh, db_hh, dG2[:, : 3 * H], Hs.reshape((T + 1) * B, H)[: T * B])
    add_weight_grads(dW_ih[: 2 * H], db_ih[: 2 * H], dG2[:, : 2 * H], X)
    add_weight_grads(dW_ih[2 * H:], db_ih[2 * H:], dG2[:, 3 * H:], X)
    if dX.shape[0] > 0:
        gemm(dX, dG2[:, : 2 * H], W_ih[: 2 * H], False, False, 1.0)
        gemm(dX, dG2[:, 3 * H:], W_ih[2 * H:], False, False, 1.0)
