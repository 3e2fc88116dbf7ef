"""Elman RNN layer kernels with PyTorch nn.RNN(nonlinearity="tanh")'s equations: forward, then BPTT.

Legend: T = time steps, B = batch, I = layer input size, H = hidden size, TB = T*B rows (time-major).
  X [TB, I] layer input          Hs [T+1, B, H] states, Hs[0] = initial h     lengths [B] valid steps
  A [T, B, H] pre-activations after the GEMMs (the step leaves them; h' holds tanh of them)
  S: unused (the shared layer signature carries an auxiliary state buffer for other cells)
  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
Steps at or past a row's length leave its state unchanged (and pass its gradient straight through).
"""
import numpy as np

from hpcrnn.kernels.common import (freeze_row, freeze_row_backward, gemm, kernel, layer_grads,
                                   project_inputs, tanh)


@kernel
def _step(Hs, A, t, b):
    """Row b of step t: h [H] = tanh(a [H]). (Row kernels slice their rows themselves: ROW_VIEWS in common.py.)"""
    h, a = Hs[t + 1, b], A[t, b]
    for j in range(h.shape[0]):
        h[j] = tanh(a[j])


@kernel
def _step_backward(dG, dH_prev, dH, dHs, Hs, t, b):
    """Row b of step t. dg [H] pre-activation grads out; dh_prev [H] := 0 (the recurrent GEMM adds in);
    dh, dh_above, h [H]."""
    dg, dh_prev, dh, dh_above, h = dG[t, b], dH_prev[b], dH[b], dHs[t, b], Hs[t + 1, b]
    one = h.dtype.type(1.0)
    for j in range(h.shape[0]):
        dg[j] = (dh[j] + dh_above[j]) * (one - h[j] * h[j])
        dh_prev[j] = 0.0


@kernel
def forward(Hs, S, A, X, W_ih, W_hh, b_ih, b_hh, lengths):
    """Runs all T steps. Hs, A out (Hs[0] preset by the caller); W_ih [H, I], W_hh [H, H]."""
    T, B, H = A.shape
    project_inputs(A.reshape(T * B, H), X, W_ih, b_ih, b_hh)
    W_hh_T = np.ascontiguousarray(W_hh.T)  # BLAS runs small h @ W_hh^T products faster untransposed
    for t in range(T):
        gemm(A[t], Hs[t], W_hh_T, False, False, 1.0)
        for b in range(B):
            if t < lengths[b]:
                _step(Hs, A, t, b)
            else:
                freeze_row(Hs[t + 1, b], Hs[t, b])


@kernel
def backward(dX, dW_ih, dW_hh, db_ih, db_hh, dG, dh, dh_prev, dc, dHs, Hs, S, A, X, W_ih, W_hh, lengths):
    """BPTT, last step first. ADDS into dX [TB, I] (skipped when it has no rows), dW_ih, dW_hh, db_ih, db_hh.
    dh [B, H]: gradient wrt the final h on entry, then overwritten, as are dh_prev [B, H] and dG [T, B, H];
    dc unused. dHs [T, B, H]: gradient reaching each step's h from above."""
    T, B, H = dG.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < lengths[b]:
                _step_backward(dG, dh_prev, dh, dHs, Hs, t, b)
            else:
                freeze_row_backward(dG[t, b], dh_prev[b], dh[b], dHs[t, b])
        gemm(dh_prev, dG[t], W_hh, False, False, 1.0)
        dh, dh_prev = dh_prev, dh
    layer_grads(dX, dW_ih, dW_hh, db_ih, db_hh, dG.reshape(T * B, H), X,
                Hs.reshape((T + 1) * B, H)[: T * B], W_ih)
