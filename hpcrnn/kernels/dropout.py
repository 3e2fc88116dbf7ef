"""Dropout masks between stacked layers, drawn from a counter-based hash of (seed, step, global sample index,
layer, step-in-sequence, unit), so a sample's mask is the same whichever rank or batch row holds it.

Legend: T = time steps, B = batch, W = width of the masked layer output (H, or 2H when bidirectional).
  M [T, B, W] out: 0 (dropped) or 1/(1-p) (kept; inverted scaling)     indices [B] global sample indices
"""
import numpy as np

from hpcrnn.kernels.common import kernel

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@kernel
def _mix(z):
    """splitmix64's finaliser: a bijection of uint64 whose output bits all depend on every input bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@kernel
def _combine(key, value):
    return _mix(key ^ (np.uint64(value) + _GOLDEN))


@kernel
def draw_mask(M, seed, step, layer, indices, p):
    """M[t, b, j] = 1/(1-p) when the hash of (seed, step, layer, indices[b], t, j) maps to a uniform u >= p,
    else 0. seed, step, layer, indices >= 0; 0 <= p < 1."""
    T, B, W = M.shape
    scale = M.dtype.type(1.0 / (1.0 - p))
    zero = M.dtype.type(0.0)
    key = _combine(_combine(_combine(np.uint64(0), seed), step), layer)
    unit = 1.0 / 9007199254740992.0  # 2**-53
    for b in range(B):
        sample = _combine(key, indices[b])
        for t in range(T):
            row = M[t, b]
            for j in range(W):
                u = np.float64(_combine(sample, t * W + j) >> np.uint64(11)) * unit
                row[j] = scale if u >= p else zero
