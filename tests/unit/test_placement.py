"""Placement: the launchers' binding flags, the commands hpcrnn builds or renders with them, and the check
that ranks do not share cores or run more compute threads than they have cores."""
import os
import re
import subprocess
import sys

import pytest

from hpcrnn import placement
from hpcrnn.scaling.render import render_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("words, flavour", [(["/usr/bin/mpiexec.mpich"], "mpich"), (["mpiexec.hydra"], "mpich"),
                                            (["mpirun.openmpi"], "openmpi"), (["srun", "--mpi=pmi2"], "srun"),
                                            (["/nowhere/mpiexec"], "unknown")])
def test_launcher_flavour(words, flavour):
    assert placement.launcher_flavour(words) == flavour


@pytest.mark.parametrize("flavour, threads, flags", [
    ("mpich", 1, ["-bind-to", "core"]), ("mpich", 4, ["-bind-to", "core:4"]),
    ("openmpi", 1, ["--bind-to", "core"]), ("openmpi", 4, ["--map-by", "slot:PE=4", "--bind-to", "core"]),
    ("srun", 4, ["--cpu-bind=cores"]), ("unknown", 1, [])])
def test_bind_flags(flavour, threads, flags):
    assert placement.bind_flags(flavour, threads) == flags


def test_with_binding_appends_once_and_keeps_the_users_choice():
    assert placement.with_binding(["mpiexec.mpich"], 2) == ["mpiexec.mpich", "-bind-to", "core:2"]
    srun = ["srun", "--mpi=pmi2", "-K1", "--cpus-per-task=2"]
    assert placement.with_binding(srun, 2) == [*srun, "--cpu-bind=cores"]
    mine = ["mpiexec.mpich", "-bind-to", "numa"]
    assert placement.with_binding(mine, 1) == mine
    assert placement.with_binding(["srun", "--cpu-bind=none"], 1) == ["srun", "--cpu-bind=none"]


def test_sweep_launch_prefix_binds(monkeypatch):
    from hpcrnn.scaling import sweep
    monkeypatch.setenv("HPCRNN_MPIEXEC", "/usr/bin/mpiexec.mpich")
    prefix = placement.with_binding(sweep.launcher_prefix("mpiexec", ""), 1)
    assert prefix == ["/usr/bin/mpiexec.mpich", "-bind-to", "core"]


@pytest.mark.parametrize("name, values", [("train", {"run_dir": "r"}), ("strong_scaling", {"ranks": "1,2", "out": "/o"}),
                                          ("weak_scaling", {"ranks": "1,2", "out": "/o"}),
                                          ("sweep_array", {"array": "0-3", "out": "/o"})])
def test_rendered_templates_bind_every_srun(name, values):
    text = render_file(name, values)
    sruns = [line for line in text.splitlines() if re.search(r"\bsrun --mpi", line)]
    assert sruns and all("--cpu-bind=cores" in line for line in sruns), sruns


def test_makefile_run_binds_its_ranks():
    text = open(os.path.join(ROOT, "Makefile")).read()
    recipe = text.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    launches = [line for line in recipe.splitlines() if "$(MPIEXEC) " in line]
    assert len(launches) == 3 and all("$(MPIEXEC) $(BIND) -n" in line for line in launches)
    assert re.search(r"^BIND\s*\?=\s*\$\(shell \$\(PY\) -m hpcrnn.placement \"\$\(MPIEXEC\)\"", text, re.M)
    printed = subprocess.run([sys.executable, "-m", "hpcrnn.placement", "/usr/bin/mpiexec.mpich"],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert printed.stdout == "-bind-to core\n", printed.stderr


def record(rank, cpus, host="n1", numba=1, blas=1, rows=1):
    return {"rank": rank, "host": host, "affinity": cpus,
            "threads": {"numba": numba, "blas": blas, "rows": rows, "prefetch": 1}}


def test_no_warning_for_ranks_on_their_own_cores():
    assert placement.placement_warnings([record(0, [0]), record(1, [1]), record(2, [0], host="n2")]) == []


def test_warns_when_ranks_share_cores():
    warnings = placement.placement_warnings([record(0, [0, 1, 2]), record(1, [0, 1, 2]), record(2, [3])])
    assert len(warnings) == 1
    assert "ranks share cores on n1 (ranks 0, 1 on CPU(s) 0-2)" in warnings[0] and "-bind-to core" in warnings[0]


def test_warns_when_threads_exceed_cores():
    warnings = placement.placement_warnings([record(0, [0, 1], numba=4), record(1, [2, 3], blas=2)])
    assert warnings == ["warning: rank 0 on n1 runs 4 compute threads on 2 core(s) (numba 4, row threads 1 x BLAS 1): "
                        "give it more cores or fewer threads"]


def test_row_threads_times_blas_threads_count_against_the_cores():
    assert placement.placement_warnings([record(0, [0, 1], rows=2)]) == []
    warnings = placement.placement_warnings([record(0, [0, 1], rows=2, blas=2), record(1, [2, 3], rows=3)])
    assert [w.split(" runs ")[0] for w in warnings] == ["warning: rank 0 on n1", "warning: rank 1 on n1"]
    assert "runs 4 compute threads on 2 core(s) (numba 1, row threads 2 x BLAS 2)" in warnings[0]


def test_describe_records_host_and_affinity():
    mine = placement.describe(0, prefetch=True, rows=2)
    assert mine["affinity"] == sorted(os.sched_getaffinity(0)) and mine["host"] and mine["threads"]["rows"] == 2
    assert mine["threads"]["prefetch"] == 1 and mine["threads"]["numba"] >= 1


def test_compact():
    assert placement.compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_core_slots_are_disjoint_and_refuse_to_overcommit():
    assert placement.core_slots([3, 0, 1, 2], 2, 2) == [[0, 1], [2, 3]]
    assert placement.core_slots([0, 1, 2, 3], 1, 3) == [[0], [1], [2]]
    assert placement.core_slots([0, 1], 2, 2) is None and placement.core_slots([0, 1], 0, 1) is None


def test_slot_flags_bind_rank_r_to_the_r_th_cpu():
    assert placement.slot_flags("mpich", [2, 3]) == ["-bind-to", "user:2,3"]
    assert placement.slot_flags("openmpi", [4]) == ["--cpu-set", "4", "--bind-to", "core"]
    assert placement.slot_flags("srun", [0]) == [] and placement.slot_flags("unknown", [0]) == []


def test_trial_commands_carry_their_cores():
    from hpcrnn.tuning.task import Settings, TrialTask
    one = Settings("val_loss", "loss", False, (), 3.0, ranks=1, count=2)
    two = Settings("val_loss", "loss", False, (), 3.0, ranks=2, count=2)
    assert TrialTask("/o", 0, one, cpus=[1]).command()[:3] == ["taskset", "-c", "1"]
    assert TrialTask("/o", 0, one).command()[0] == sys.executable
    bound = TrialTask("/o", 0, two, prefix=["mpiexec"], cpus=[2, 3], flavour="mpich").command()
    assert bound[:4] == ["mpiexec", "-bind-to", "user:2,3", "-n"]
    users = TrialTask("/o", 0, two, prefix=["mpiexec", "-bind-to", "none"], cpus=[2, 3], flavour="mpich").command()
    assert users[:4] == ["mpiexec", "-bind-to", "none", "-n"]          # the user's placement wins
