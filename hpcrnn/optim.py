"""Optimizers on flat parameter buffers (SGD, Adam, AdamW), LR schedules as pure functions, clipping.

Every rank applies the same update to the same numbers, so parameters stay identical on all ranks."""
import math

import numpy as np


def learning_rate(step, base_lr, total_steps, name="constant", warmup_steps=0, step_size=1000,
                  gamma=0.5, min_lr=0.0):
    """LR at optimizer step `step` (0-based): linear warmup, then constant | step | cosine decay."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    after = step - warmup_steps
    if name == "step":
        return base_lr * gamma ** (after // step_size)
    if name == "cosine":
        span = max(1, total_steps - warmup_steps)
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(after, span) / span))
    return base_lr


def clip_factor(sq_norm, max_norm):
    """Scale that brings a gradient of squared norm `sq_norm` to at most `max_norm` (1.0 when off)."""
    if max_norm <= 0:
        return 1.0
    norm = math.sqrt(sq_norm)
    return min(1.0, max_norm / (norm + 1e-6))


class Optimizer:
    """PyTorch-equivalent SGD / Adam / AdamW over one flat buffer; state is a dict of arrays + step."""

    def __init__(self, name, params, momentum=0.0, nesterov=False, weight_decay=0.0,
                 beta1=0.9, beta2=0.999, eps=1e-8):
        self.name = name
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.steps = 0
        self.state = {}
        if name == "sgd" and momentum > 0:
            self.state["momentum"] = np.zeros_like(params)
        if name in ("adam", "adamw"):
            self.state["exp_avg"] = np.zeros_like(params)
            self.state["exp_avg_sq"] = np.zeros_like(params)
        self._work = np.empty_like(params)

    def step(self, params, grads, lr, scale=1.0):
        """Updates `params` in place from `scale * grads` (`grads` may be modified). Folding the scale (the
        1/global-count of the gradient sum, times the clipping factor) into the update saves a pass."""
        self.steps += 1
        if self.weight_decay and self.name != "adamw" and scale != 1.0:
            grads *= scale
            scale = 1.0
        if self.name == "sgd":
            self._sgd(params, grads, lr, scale)
        else:
            self._adam(params, grads, lr, scale)

    def _sgd(self, params, grads, lr, scale):
        if self.weight_decay:
            grads += self.weight_decay * params
        if self.momentum > 0:
            buf = self.state["momentum"]
            if self.steps == 1:
                np.multiply(grads, scale, out=buf)
            else:
                buf *= self.momentum
                buf += scale * grads
            if self.nesterov:
                grads *= scale
                grads += self.momentum * buf
            else:
                grads = buf
            scale = 1.0
        params -= (lr * scale) * grads

    def _adam(self, params, grads, lr, scale):
        b1, b2, t = self.beta1, self.beta2, self.steps
        if self.name == "adamw" and self.weight_decay:
            params *= 1 - lr * self.weight_decay
        elif self.weight_decay:
            grads += self.weight_decay * params
        m, v, work = self.state["exp_avg"], self.state["exp_avg_sq"], self._work
        m *= b1
        m += ((1 - b1) * scale) * grads
        v *= b2
        np.multiply(grads, grads, out=work)
        work *= (1 - b2) * scale * scale
        v += work
        np.sqrt(v, out=work)
        work /= math.sqrt(1 - b2 ** t)
        work += self.eps
        np.divide(m, work, out=work)
        work *= lr / (1 - b1 ** t)
        params -= work

    def state_arrays(self):
        return dict(self.state)

    def load_state(self, arrays, steps):
        for key, value in arrays.items():
            if key not in self.state or self.state[key].shape != value.shape:
                raise ValueError(f"optimizer state {key!r} does not match this optimizer")
            self.state[key][:] = value
        self.steps = int(steps)


def make_optimizer(optim_config, params):
    c = optim_config
    return Optimizer(c.name, params, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay,
                     beta1=c.beta1, beta2=c.beta2, eps=c.eps)
