"""Synthetic sequence generators: Mackey-Glass, Lorenz-96 and noisy multi-sines, float64 [count, steps, F].

Sequence i depends only on (seed, i) through np.random.default_rng([seed, i]), and the integrators use only
+, -, *, / across sequences, so a sequence's values do not depend on which others share its slab."""
import numpy as np

MG_BETA, MG_GAMMA, MG_POWER, MG_TAU = 0.2, 0.1, 10, 17.0
MG_DT, MG_SUBSAMPLE, MG_BURN_IN, MG_LAG = 0.1, 10, 500, 6   # samples every 1.0 time unit; feature k lags k*6
L96_FORCING, L96_DT, L96_SUBSAMPLE, L96_BURN_IN = 8.0, 0.01, 5, 200   # samples every 0.05 time units
SINE_COMPONENTS, SINE_NOISE = 3, 0.1


def _mg_rate(x, delayed):
    """dx/dt of Mackey-Glass; delayed**10 by repeated squaring (exact, vectorisation-independent)."""
    d2 = delayed * delayed
    d4 = d2 * d2
    d10 = d4 * d4 * d2
    return MG_BETA * delayed / (1.0 + d10) - MG_GAMMA * x


def mackey_glass(indices, steps, features, seed):
    """Mackey-Glass (tau=17, beta=0.2, gamma=0.1, n=10) by RK4 with dt=0.1 and the delayed term linearly
    interpolated at half steps, sampled every 1.0; feature k is the series delayed by 6*k samples."""
    count = len(indices)
    delay = int(round(MG_TAU / MG_DT))
    start = np.array([0.5 + np.random.default_rng([seed, int(i)]).random() for i in indices])
    history = np.repeat(start[:, None], delay + 1, axis=1)      # ring buffer of the last delay+1 steps
    lag = MG_LAG * (features - 1)
    samples = MG_BURN_IN + lag + steps
    kept = np.empty((count, samples))
    x = start.copy()
    for n in range(samples * MG_SUBSAMPLE):
        old, newer = history[:, (n + 1) % (delay + 1)], history[:, (n + 2) % (delay + 1)]
        middle = 0.5 * (old + newer)
        k1 = _mg_rate(x, old)
        k2 = _mg_rate(x + 0.5 * MG_DT * k1, middle)
        k3 = _mg_rate(x + 0.5 * MG_DT * k2, middle)
        k4 = _mg_rate(x + MG_DT * k3, newer)
        x = x + (MG_DT / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        history[:, (n + 1) % (delay + 1)] = x
        if (n + 1) % MG_SUBSAMPLE == 0:
            kept[:, (n + 1) // MG_SUBSAMPLE - 1] = x
    first = MG_BURN_IN + lag
    return np.stack([kept[:, first - MG_LAG * k:first - MG_LAG * k + steps] for k in range(features)], axis=2)


def _l96_rate(x):
    return (np.roll(x, -1, axis=1) - np.roll(x, 2, axis=1)) * np.roll(x, 1, axis=1) - x + L96_FORCING


def lorenz96(indices, steps, features, seed):
    """Lorenz-96 with `features` variables and forcing 8, RK4 with dt=0.01 sampled every 0.05 after a
    burn-in of 200 samples; the start is 8 plus a small random perturbation per sequence."""
    x = np.stack([L96_FORCING + 0.01 * np.random.default_rng([seed, int(i)]).standard_normal(features)
                  for i in indices]).reshape(len(indices), features)
    out = np.empty((len(indices), steps, features))
    for sample in range(L96_BURN_IN + steps):
        for _ in range(L96_SUBSAMPLE):
            k1 = _l96_rate(x)
            k2 = _l96_rate(x + 0.5 * L96_DT * k1)
            k3 = _l96_rate(x + 0.5 * L96_DT * k2)
            k4 = _l96_rate(x + L96_DT * k3)
            x = x + (L96_DT / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if sample >= L96_BURN_IN:
            out[:, sample - L96_BURN_IN] = x
    return out


def _sine_parameters(rng, features, fundamental):
    """Amplitudes, frequencies (cycles per step) and phases [features, SINE_COMPONENTS]."""
    shape = (features, SINE_COMPONENTS)
    harmonics = np.arange(1, SINE_COMPONENTS + 1)
    frequency = fundamental * harmonics * (1.0 + 0.05 * rng.standard_normal(shape))
    amplitude = rng.uniform(0.2, 1.0, shape) / harmonics
    phase = rng.uniform(0.0, 2 * np.pi, shape)
    return amplitude, frequency, phase


def sines(indices, steps, features, seed, classes=0, continuous=False):
    """Noisy sums of 3 harmonics per feature. With classes=C each sequence draws a class c whose fundamental
    frequency is 0.01 + 0.08*c/(C-1); otherwise the fundamental is random in [0.01, 0.09]. continuous=True
    (series form) shares one set of parameters (from seed) and places sequence i at time i*steps, so the
    concatenated sequences form one continuous series. Returns (values, labels or None)."""
    values = np.empty((len(indices), steps, features))
    labels = np.zeros(len(indices), dtype=np.int64)
    shared = _sine_parameters(np.random.default_rng([seed]), features, 0.03) if continuous else None
    for row, index in enumerate(indices):
        rng = np.random.default_rng([seed, int(index)])
        if classes:
            labels[row] = rng.integers(classes)
            fundamental = 0.01 + 0.08 * labels[row] / max(classes - 1, 1)
        else:
            fundamental = rng.uniform(0.01, 0.09)
        amplitude, frequency, phase = shared or _sine_parameters(rng, features, fundamental)
        time = np.arange(steps, dtype=np.float64) + (int(index) * steps if continuous else 0)
        angle = 2 * np.pi * frequency[None] * time[:, None, None] + phase[None]
        noise = SINE_NOISE * rng.standard_normal((steps, features))
        values[row] = (amplitude[None] * np.sin(angle)).sum(axis=2) + noise
    return values, (labels if classes else None)


def work_bytes(kind, steps, features):
    """Bytes of working memory per sequence while generating (to size slabs)."""
    extra = {"mackey-glass": (MG_BURN_IN + MG_LAG * features + steps + int(MG_TAU / MG_DT) + 1) * 8,
             "lorenz96": features * 8 * 12, "sines": features * SINE_COMPONENTS * 8 * 4}[kind]
    return steps * features * 8 * 2 + extra
