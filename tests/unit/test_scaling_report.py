"""The scaling report from fabricated result.json files: plots exist and are PNGs, the efficiencies in the
Markdown tables are computed right, oversubscribed runs are marked, and the model and machine are stated."""
import json
import os

import pytest

from hpcrnn.errors import ConfigError
from hpcrnn.scaling.report import scaling_rows, write_report

INFO = {"cpu": "Test CPU 9000", "cores": 2, "cores_available": 2, "mpi_library": "MPICH Version: 4.0.2",
        "numba": "0.68.1", "hpcrnn": "0.1.0"}


def fabricate(folder, mode, ranks, t_step, global_batch, oversubscribed=False):
    run_dir = os.path.join(folder, f"{mode}-p{ranks:04d}")
    os.makedirs(run_dir)
    result = {"mode": mode, "ranks": ranks, "global_batch": global_batch, "local_batch": global_batch / ranks,
              "t_step": t_step, "t_compute": t_step * 0.8, "t_comm": t_step * 0.15, "t_io": t_step * 0.05,
              "t_step_q25": t_step * 0.95, "t_step_q75": t_step * 1.1, "throughput": global_batch / t_step,
              "oversubscribed": oversubscribed, "cores_available": 2, "num_params": 1000, "gradient_bytes": 4016,
              "steps_measured": 30, "warmup_steps": 5, "threads_per_rank": 1, "info": INFO,
              "settings": {"cell": "lstm", "hidden": 32, "layers": 1}, "other_cpu_cores": 0.25}
    with open(os.path.join(run_dir, "result.json"), "w") as handle:
        json.dump(result, handle)


@pytest.fixture
def sweep(tmp_path):
    folder = str(tmp_path / "sweep")
    fabricate(folder, "strong", 1, 0.010, 64)
    fabricate(folder, "strong", 2, 0.006, 64)
    fabricate(folder, "strong", 4, 0.005, 64, oversubscribed=True)
    fabricate(folder, "weak", 1, 0.010, 32)
    fabricate(folder, "weak", 2, 0.0125, 64)
    measurements = [{"ranks": 2, "bytes": n, "seconds": 2e-6 + n * 5e-10} for n in (4096, 1 << 20, 1 << 24)]
    with open(os.path.join(folder, "allreduce.json"), "w") as handle:
        json.dump({"alpha": 1e-6, "beta": 5e-10, "ranks_used": [2], "measurements": measurements}, handle)
    return folder


def table_rows(markdown, heading):
    """The data rows of the first table after `heading`, as lists of cells."""
    section = markdown.split(heading, 1)[1]
    lines = [l for l in section.split("\n\n", 3)[2].splitlines() if l.startswith("| ") and "---" not in l]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_report_tables_plots_and_model(sweep, tmp_path):
    out = tmp_path / "report" / "scaling.md"
    write_report(sweep, str(out))
    markdown = out.read_text()
    for name in ("strong_time_throughput", "strong_speedup_efficiency", "strong_phases", "strong_projection",
                 "weak_time_throughput", "weak_speedup_efficiency", "weak_phases", "weak_projection"):
        path = out.parent / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name}.png)" in markdown
    strong = table_rows(markdown, "## Strong scaling")
    assert [row[0] for row in strong] == ["1", "2", "4"]
    assert [row[10] for row in strong] == ["100.0%", "83.3%", "50.0%"]        # 10/(2*6), 10/(4*5)
    assert [row[8] for row in strong] == ["1.000", "1.667", "2.000"]
    assert strong[2][12].startswith("oversubscribed") and strong[1][12] == ""
    assert strong[0][11] == "0.25"
    weak = table_rows(markdown, "## Weak scaling")
    assert [row[10] for row in weak] == ["100.0%", "80.0%"]                   # 10 / 12.5
    assert "t_step(P) = c · b(P) + s + t_allreduce(P)" in markdown
    assert "α = 1.000 µs" in markdown and "Assumptions" in markdown
    assert "| cpu | `Test CPU 9000` |" in markdown
    for ranks in ("| 64 |", "| 4096 |"):
        assert ranks in markdown


def test_strong_projection_fits_only_runs_that_are_not_oversubscribed(sweep, tmp_path):
    out = tmp_path / "r.md"
    write_report(sweep, str(out), alpha=2e-6, beta=1e-9)
    markdown = out.read_text()
    # compute + I/O = 0.85 t_step: (64, 8.5 ms) and (32, 5.1 ms) give c = 3.4/32 ms per sample and s = 1.7 ms;
    # the oversubscribed 4-rank point (16, 4.25 ms) would change both.
    assert "c = 106.250 µs per local sample, s = 1.700 ms per step (fitted to 2 non-oversubscribed" in markdown
    assert "given with --alpha/--beta" in markdown and "α = 2.000 µs" in markdown


def test_baseline_is_the_smallest_run_that_is_not_oversubscribed():
    rows = scaling_rows([{"ranks": 1, "throughput": 10.0, "oversubscribed": True},
                         {"ranks": 2, "throughput": 30.0, "oversubscribed": False},
                         {"ranks": 4, "throughput": 45.0, "oversubscribed": False}])
    assert [r["efficiency"] for r in rows] == [pytest.approx(2 / 3), 1.0, 0.75]
    assert rows[2]["ideal_speedup"] == 2.0 and rows[0]["baseline_ranks"] == 2


def test_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no result.json"):
        write_report(str(tmp_path), str(tmp_path / "r.md"))
