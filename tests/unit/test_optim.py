"""Optimizers and schedules against PyTorch's definitions (torch.optim) on the same numbers."""
import math

import numpy as np
import pytest

from hpcrnn.optim import Optimizer, clip_factor, learning_rate


def reference_run(name, steps, **kw):
    torch = pytest.importorskip("torch", reason="PyTorch absent: torch.optim reference not available")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) for _ in range(steps)]
    ours = p0.copy()
    opt = Optimizer(name, ours, **{k: v for k, v in kw.items() if k != "lr"})
    for g in grads:
        opt.step(ours, g.copy(), kw["lr"])
    tp = torch.nn.Parameter(torch.tensor(p0))
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    targs = {"lr": kw["lr"], "weight_decay": kw.get("weight_decay", 0.0)}
    if name == "sgd":
        targs.update(momentum=kw.get("momentum", 0.0), nesterov=kw.get("nesterov", False))
    else:
        targs.update(betas=(kw.get("beta1", 0.9), kw.get("beta2", 0.999)), eps=kw.get("eps", 1e-8))
    topt = cls([tp], **targs)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    return ours, tp.detach().numpy()


@pytest.mark.parametrize("name, kw", [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, weight_decay=0.1)),
    ("adamw", dict(lr=0.01, weight_decay=0.1)),
])
def test_matches_torch_optim(name, kw):
    ours, theirs = reference_run(name, 7, **kw)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, kw", [
    ("sgd", dict()), ("sgd", dict(momentum=0.9)), ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("adam", dict()), ("adam", dict(weight_decay=0.1)), ("adamw", dict(weight_decay=0.1)),
])
def test_scale_is_the_same_as_scaled_gradients(name, kw):
    rng = np.random.default_rng(1)
    p0, grads = rng.standard_normal(30), [rng.standard_normal(30) for _ in range(4)]
    folded, explicit = p0.copy(), p0.copy()
    a, b = Optimizer(name, folded, **kw), Optimizer(name, explicit, **kw)
    for g in grads:
        a.step(folded, g.copy(), 0.1, scale=0.25)
        b.step(explicit, g * 0.25, 0.1)
    np.testing.assert_allclose(folded, explicit, rtol=1e-13, atol=1e-15)


def test_schedules():
    assert learning_rate(0, 1.0, 100, warmup_steps=4) == 0.25
    assert learning_rate(3, 1.0, 100, warmup_steps=4) == 1.0
    assert learning_rate(25, 1.0, 100, "step", step_size=10, gamma=0.5) == 0.25
    assert learning_rate(0, 1.0, 100, "cosine") == 1.0
    assert math.isclose(learning_rate(50, 1.0, 100, "cosine"), 0.5)
    assert math.isclose(learning_rate(100, 1.0, 100, "cosine", min_lr=0.1), 0.1)


def test_clip_factor():
    assert clip_factor(4.0, 0) == 1.0
    assert clip_factor(4.0, 10.0) == 1.0
    assert math.isclose(clip_factor(16.0, 2.0), 0.5, rel_tol=1e-6)
