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


# Reference steps that need no PyTorch: three steps from P0 with gradients SCALE * GRADS[t] (the scale is folded
# into the update, as training folds 1/count and the clip factor), expected values computed once by a plain
# NumPy transcription of torch.optim's documented SGD / Adam / AdamW algorithms and checked against torch 2.13.
P0 = [0.5, -1.25, 2.0, -0.125, 0.75]
GRADS = [[0.3, -0.7, 1.1, 0.05, -2.0], [-0.4, 0.2, 0.9, -1.5, 0.6], [1.2, -0.3, -0.8, 0.25, 0.1]]
SCALE = 0.5
REFERENCE = {  # name: (optimizer, lr, keyword arguments, parameters after the three steps)
    "sgd": ("sgd", 0.1, {}, [0.445, -1.2100000000000002, 1.9400000000000002, -0.06499999999999999, 0.815]),
    "sgd-momentum-wd": ("sgd", 0.1, dict(momentum=0.9, weight_decay=0.01),
                        [0.4345843845, -1.1522664637500002, 1.794493543, -0.001139852374999993, 0.9544461992500001]),
    "sgd-nesterov": ("sgd", 0.05, dict(momentum=0.9, nesterov=True),
                     [0.4443075, -1.1891175, 1.8824525000000003, -0.039548749999999994, 0.8765499999999999]),
    "adam": ("adam", 0.01, {}, [0.48661276084336713, -1.2300245416847349, 1.9765703123073126, -0.12333534684326686,
                                0.7672760956535338]),
    "adam-wd": ("adam", 0.01, dict(weight_decay=0.1),
                [0.4829390575231029, -1.225011319637212, 1.9738130981176578, -0.12299225518479989,
                 0.7652110229767939]),
    "adam-betas": ("adam", 0.02, dict(beta1=0.5, beta2=0.9, eps=1e-3),
                   [0.4737674532496997, -1.2163853645983178, 1.961655145147607, -0.11986998018074795,
                    0.7746626178220981]),
    "adamw": ("adamw", 0.01, dict(weight_decay=0.1),
              [0.48513231523805256, -1.2263026777144788, 1.9706061987985575, -0.12294794585058691,
               0.7650040764178767]),
}


@pytest.mark.parametrize("case", list(REFERENCE))
def test_matches_stored_reference_steps(case):
    name, lr, kw, expected = REFERENCE[case]
    params = np.array(P0)
    opt = Optimizer(name, params, **kw)
    for g in GRADS:
        opt.step(params, np.array(g), lr, scale=SCALE)
    np.testing.assert_allclose(params, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("case", list(REFERENCE))
def test_state_round_trip_through_a_checkpoint_is_bitwise(case, tmp_path):
    """Two steps, state saved (hpcrnn.checkpoint) and loaded into a fresh optimizer: the next steps are
    bitwise those of the optimizer that never stopped."""
    from hpcrnn import checkpoint as ckpt
    name, lr, kw, _ = REFERENCE[case]
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(5) for _ in range(5)]
    straight = np.array(P0)
    opt = Optimizer(name, straight, **kw)
    for g in grads[:2]:
        opt.step(straight, g.copy(), lr, scale=SCALE)
    path = str(tmp_path / "state.h5")
    ckpt.save(path, {**{f"optimizer/{k}": v for k, v in opt.state_arrays().items()}, "params": straight},
              {"steps": opt.steps})
    arrays, meta = ckpt.load(path)
    resumed = arrays["params"].copy()
    fresh = Optimizer(name, resumed, **kw)
    fresh.load_state({k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")},
                     meta["steps"])
    for g in grads[2:]:
        opt.step(straight, g.copy(), lr, scale=SCALE)
        fresh.step(resumed, g.copy(), lr, scale=SCALE)
        assert np.array_equal(resumed, straight)
