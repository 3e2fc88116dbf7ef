"""Asynchronous successive halving (ASHA) without a coordinator: at a rung (the end of a given epoch) a trial is
promoted when its monitored value ranks in the top 1/reduction_factor of the values recorded at that rung so
far, its own included (the first trial to get there always goes on); otherwise it is stopped. Each trial decides
for itself from the other trials' records in the sweep folder, so Slurm array tasks need no coordinator."""
import math

from hpcrnn.tuning.record import read_record, trial_dir


def keep_count(seen, reduction_factor):
    """How many of `seen` trials at a rung go on: the top 1/reduction_factor, at least one."""
    return max(1, math.floor(seen / reduction_factor + 1e-9))


def decide(value, others, reduction_factor, maximize):
    """(promote, rank, keep): `value`'s rank among itself and `others` (1 = best; ties count in its favour,
    a non-finite value ranks last and is never promoted) and how many of them go on."""
    finite_others = [v for v in others if math.isfinite(v)]
    seen = len(others) + 1
    keep = keep_count(seen, reduction_factor)
    if not math.isfinite(value):
        return False, seen, keep
    rank = 1 + sum(1 for v in finite_others if (v > value if maximize else v < value))
    return rank <= keep, rank, keep


def seen_at_rung(out, index, rung, count):
    """{trial index: value} of the other trials (of `count`) that have recorded a value at this rung."""
    seen = {}
    for other in range(count):
        if other != index:
            value = read_record(trial_dir(out, other))["rungs"].get(str(rung))
            if value is not None:
                seen[other] = float(value)
    return seen


def rung_decision(out, index, count, rung, value, step, spec_settings):
    """The decision record of trial `index` at `rung` (its value already written to its own record, so that
    trials deciding at the same moment see each other)."""
    monitor, factor, maximize = spec_settings
    others = seen_at_rung(out, index, rung, count)
    promote, rank, keep = decide(value, list(others.values()), factor, maximize)
    verdict = "promote" if promote else "stop"
    shown = f"{value:.5g}" if math.isfinite(value) else f"{value} (not finite)"
    reason = (f"rung epoch {rung}: {monitor} {shown} ranked {rank} of {len(others) + 1} seen there, "
              f"top {keep} go on (reduction factor {factor:g})")
    return {"rung": rung, "step": step, "value": value, "decision": verdict, "rank": rank, "keep": keep,
            "seen": {str(k): v for k, v in sorted(others.items())}, "reason": reason}
