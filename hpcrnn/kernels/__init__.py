"""Numba kernels of the recurrent cells, the linear head and the losses; CELLS maps a cell name to its kernels.

Every cell module has the same two layer kernels (see each module's shape legend):
  forward(Hs, S, A, X, W_ih, W_hh, b_ih, b_hh, lengths)
  backward(dX, dW_ih, dW_hh, db_ih, db_hh, dG, dh, dh_prev, dc, dHs, Hs, S, A, X, W_ih, W_hh, lengths)
Importing this package compiles nothing: kernels compile (or load from numba's cache) on first call.
"""
from collections import namedtuple

from hpcrnn.kernels import gated, gru, lstm, rnn

Cell = namedtuple("Cell", "gates grad_gates bias_hh aux_state carries_c forward backward")
Cell.__doc__ = """Kernels and sizes of one cell. gates: G (W_ih has G*H rows); grad_gates: width/H of dG;
bias_hh: has a bias_hh_lK; aux_state: uses the S buffer; carries_c: S is a second carried state (LSTM's c)."""

CELLS = {
    "lstm": Cell(gates=4, grad_gates=4, bias_hh=True, aux_state=True, carries_c=True,
                 forward=lstm.forward, backward=lstm.backward),
    "gru": Cell(gates=3, grad_gates=4, bias_hh=True, aux_state=True, carries_c=False,
                forward=gru.forward, backward=gru.backward),
    "rnn": Cell(gates=1, grad_gates=1, bias_hh=True, aux_state=False, carries_c=False,
                forward=rnn.forward, backward=rnn.backward),
    "gated": Cell(gates=4, grad_gates=4, bias_hh=False, aux_state=True, carries_c=False,
                  forward=gated.forward, backward=gated.backward),
}
HEADS = ("last", "sequence")
LOSSES = ("mse", "mae", "cross_entropy")
