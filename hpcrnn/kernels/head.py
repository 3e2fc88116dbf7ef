"""Linear head (H -> O) and the losses (mse, mae, softmax cross-entropy): forward, loss + its gradient, backward.

Legend: N = rows (B for head "last"; T*B time-major for head "sequence"), H = hidden size, O = outputs.
  Hsel [N, H] states the head reads   W [O, H], b [O]   Y [N, O] outputs (logits for cross-entropy)
  weight [N]: each row's share of its sample's mean (1/O, or 1/(steps*O) for sequences; 0 on padding)
Loss kernels return SUMS over samples of the per-sample loss and write its gradient, times scale, into dY.
"""
import numpy as np

from hpcrnn.kernels.common import gemm, kernel


@kernel
def linear_forward(Y, Hsel, W, b):
    """Y = Hsel @ W^T + b."""
    N, O = Y.shape
    for r in range(N):
        for o in range(O):
            Y[r, o] = b[o]
    gemm(Y, Hsel, W, False, True, 1.0)


@kernel
def linear_backward(dW, db, dHsel, dY, Hsel, W):
    """ADDS dW += dY^T @ Hsel, db += column sums of dY, dHsel += dY @ W."""
    N, O = dY.shape
    gemm(dW, dY, Hsel, True, False, 1.0)
    for r in range(N):
        for o in range(O):
            db[o] += dY[r, o]
    gemm(dHsel, dY, W, False, False, 1.0)


@kernel
def regression_loss(dY, Y, target, weight, squared, scale):
    """Returns sum_r weight[r] * sum_o e(Y - target), e = d**2 (squared) or |d|; dY = scale * its gradient.
    dY, Y, target [N, O]; weight [N]."""
    N, O = Y.shape
    total = 0.0
    for r in range(N):
        w = weight[r]
        if w == 0:  # padding: its targets may hold anything, NaN included
            dY[r] = 0.0
            continue
        for o in range(O):
            d = Y[r, o] - target[r, o]
            if squared:
                total += w * d * d
                dY[r, o] = scale * w * 2.0 * d
            else:
                total += w * abs(d)
                dY[r, o] = scale * w * np.sign(d)
    return total


@kernel
def error_sums(Y, target, weight):
    """Evaluation sums: (sum of squared errors, sum of absolute errors, element count) over rows with weight > 0."""
    N, O = Y.shape
    sq, ab, count = 0.0, 0.0, 0
    for r in range(N):
        if weight[r] > 0:
            for o in range(O):
                d = np.float64(Y[r, o]) - np.float64(target[r, o])
                sq += d * d
                ab += abs(d)
            count += O
    return sq, ab, count


@kernel
def cross_entropy_loss(dY, Y, labels, scale):
    """Returns (sum_b -log softmax(Y[b])[labels[b]], number of rows whose arg-max is the label);
    dY = scale * (softmax - onehot). dY, Y [B, O] logits; labels [B] int in [0, O)."""
    N, O = Y.shape
    total, correct = 0.0, 0
    for r in range(N):
        best = 0
        for o in range(1, O):
            if Y[r, o] > Y[r, best]:
                best = o
        top = np.float64(Y[r, best])
        norm = 0.0
        for o in range(O):
            norm += np.exp(np.float64(Y[r, o]) - top)
        total += top + np.log(norm) - np.float64(Y[r, labels[r]])
        correct += best == labels[r]
        for o in range(O):
            dY[r, o] = scale * np.exp(np.float64(Y[r, o]) - top) / norm
        dY[r, labels[r]] -= scale
    return total, correct
