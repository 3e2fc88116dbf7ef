"""The command line end to end: errors are one line with a non-zero exit; train/evaluate/predict/info work
serially and under mpiexec."""
import json

import h5py
import numpy as np
import pytest

import hpcrnn
from helpers import ROOT, run_cli, write_windows
from train_reference import assert_metrics_equal, expected_metrics, newest_checkpoint, read_windows


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("hpcrnn")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_data_file(tmp_path):
    result = run_cli(["train", "--data", tmp_path / "nope.h5", "--run-dir", tmp_path / "r"])
    assert_one_line_error(result, "nope.h5")


def test_unknown_cell_and_key(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"))
    assert_one_line_error(run_cli(["train", "--data", data, "--cell", "transformer"]), "model.cell", "transformer")
    assert_one_line_error(run_cli(["train", "--data", data, "--set", "model.colour=red"]), "model.colour")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochz = 3\n")
    assert_one_line_error(run_cli(["train", "--data", data, "--config", cfg]), "train.epochz")


def test_errors_under_mpi_end_every_rank(tmp_path):
    result = run_cli(["train", "--data", tmp_path / "nope.h5"], ranks=2, timeout=120)
    assert_one_line_error(result, "nope.h5")


def test_info_reports_mpi_io():
    result = run_cli(["info"])
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert fields["hdf5_mpi_io"] == "True"
    assert fields["mpi_library"].startswith("MPICH")
    assert int(fields["cores"]) >= 1


@pytest.mark.parametrize("ranks", [0, 2])
def test_train_evaluate_predict(tmp_path, ranks):
    data = write_windows(str(tmp_path / "d.h5"), n=60)
    run_dir = tmp_path / "run"
    result = run_cli(["train", "--data", data, "--cell", "gated", "--hidden", 8, "--epochs", 2, "--batch-size", 16,
                      "--run-dir", run_dir, "--set", "train.progress=line"], ranks=ranks)
    assert result.returncode == 0, result.stderr
    assert "done:" in result.stdout
    for name in ("config.toml", "metrics.jsonl", "summary.json"):
        assert (run_dir / name).exists(), name
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "event" not in r]
    assert {"step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "t_compute", "t_comm", "t_io",
            "t_step"} <= set(steps[0])
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    assert any(r.get("event") == "eval" for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ranks"] == max(ranks, 1) and summary["steps"] == len(steps)
    again = run_cli(["train", "--data", data, "--run-dir", run_dir], ranks=ranks)
    assert_one_line_error(again, "already holds a run", "--resume auto")
    ev = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--batch-size", 7], ranks=ranks)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout.strip().splitlines()[-1])
    model = checkpoint_model(run_dir, cell="gated", hidden_size=8, num_layers=1, dtype=np.float32)
    x, y = read_windows(data)
    assert_metrics_equal(metrics, expected_metrics(model, x, y), rtol=1e-5)
    out = tmp_path / "pred.h5"
    pr = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", out, "--batch-size", 7], ranks=ranks)
    assert pr.returncode == 0, pr.stderr
    with h5py.File(out, "r") as f:
        assert f["predictions"].shape == (60, 2)
        assert f.attrs["hpcrnn_schema"] == 1
        np.testing.assert_allclose(f["predictions"][()], model.predict(x), rtol=1e-5, atol=1e-6)


def checkpoint_model(run_dir, **sizes):
    """hpcrnn.Model with the newest checkpoint's parameters (3 features, 2 outputs: write_windows)."""
    model = hpcrnn.Model(input_size=3, output_size=2, head="last", **sizes)
    model.load_state_dict(newest_checkpoint(str(run_dir))[0])
    return model


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A serial run on 47 samples (23 of them val), then serial evaluate (val) and predict (all)."""
    folder = tmp_path_factory.mktemp("uneven")
    data, run_dir = write_windows(str(folder / "d.h5"), n=47, seq_len=5), folder / "run"
    result = run_cli(["train", "--data", data, "--cell", "lstm", "--hidden", 6, "--layers", 2, "--epochs", 1,
                      "--batch-size", 16, "--run-dir", run_dir, "--set", "model.dtype=float64",
                      "--set", "data.val_fraction=0.5", "--set", "train.progress=none"])
    assert result.returncode == 0, result.stderr
    return data, run_dir, evaluate_and_predict(data, run_dir, folder / "pred.h5", 0)


def evaluate_and_predict(data, run_dir, out, ranks):
    """(evaluate --split val metrics, predict rows) of the CLI at `ranks` (0: serial), batches of 5."""
    ev = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--split", "val", "--batch-size", 5],
                 ranks=ranks)
    assert ev.returncode == 0, ev.stderr
    pr = run_cli(["predict", "--checkpoint", run_dir, "--data", data, "--out", out, "--batch-size", 5], ranks=ranks)
    assert pr.returncode == 0, pr.stderr
    with h5py.File(out, "r") as handle:
        return json.loads(ev.stdout.strip().splitlines()[-1]), handle["predictions"][()]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_evaluate_and_predict_at_p_ranks_match_serial_and_numpy(uneven, tmp_path, ranks):
    data, run_dir, (serial_metrics, serial_rows) = uneven
    metrics, rows = evaluate_and_predict(data, run_dir, tmp_path / "pred.h5", ranks)
    model = checkpoint_model(run_dir, cell="lstm", hidden_size=6, num_layers=2, dtype=np.float64)
    expected = expected_metrics(model, *read_windows(data, 24, 47))
    assert_metrics_equal(serial_metrics, expected)
    assert_metrics_equal(metrics, expected)
    expected_rows = model.predict(read_windows(data)[0]).astype(np.float32)
    assert rows.shape == serial_rows.shape == (47, 2)
    for row in range(47):
        np.testing.assert_allclose(rows[row], expected_rows[row], rtol=1e-6, atol=1e-7, err_msg=f"row {row}")
        np.testing.assert_allclose(serial_rows[row], expected_rows[row], rtol=1e-6, atol=1e-7, err_msg=f"row {row}")


def test_make_run_without_launcher():
    import subprocess
    result = subprocess.run(["make", "-s", "run", "MPIEXEC=/no/such/mpiexec"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0
    assert "MPI launcher '/no/such/mpiexec' not found" in result.stderr


def test_synth_and_prepare_exit_zero(tmp_path):
    import numpy as np
    out = tmp_path / "s.h5"
    result = run_cli(["synth", "--kind", "sines", "--sequences", 12, "--length", 8, "--features", 2, "--out", out])
    assert result.returncode == 0 and f"wrote {out}" in result.stdout, result.stderr
    np.save(tmp_path / "series.npy", np.sin(np.arange(400.0)).reshape(200, 2))
    result = run_cli(["prepare", "--input", tmp_path / "series.npy", "--lookback", 10, "--horizon", 2,
                      "--out", tmp_path / "p.h5"])
    assert result.returncode == 0, result.stderr


def test_evaluate_run_dir_skips_damaged_and_reports_bad_paths(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"), n=40)
    run_dir = tmp_path / "run"
    assert run_cli(["train", "--data", data, "--hidden", 4, "--epochs", 2, "--run-dir", run_dir]).returncode == 0
    newest, previous = sorted((run_dir / "checkpoints").glob("step-*.h5"), reverse=True)[:2]
    newest.write_bytes(newest.read_bytes()[:100])
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data, "--which", "last"], ranks=2)
    assert result.returncode == 0, result.stderr
    assert "skipping damaged checkpoint" in result.stdout and f"evaluation of {previous}" in result.stdout
    best = run_dir / "checkpoints" / "best.h5"
    best.write_bytes(best.read_bytes()[:100])
    result = run_cli(["evaluate", "--checkpoint", run_dir, "--data", data])
    assert result.returncode == 0, result.stderr
    assert "skipping damaged best checkpoint" in result.stdout and f"evaluation of {previous}" in result.stdout
    assert_one_line_error(run_cli(["evaluate", "--checkpoint", tmp_path / "none.h5", "--data", data], ranks=2),
                          "checkpoint not found", "none.h5")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli(["evaluate", "--checkpoint", empty, "--data", data]), "no valid checkpoint")


def assert_exit_2_naming(result, *fragments):
    """Exit 2 (a configuration or data error), exactly one line on stderr holding the fragments, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcrnn: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("flags, fragments", [
    (["--set", "schedule.gamma=-2"], ["schedule.gamma: must be in (0, 1]"]),
    (["--lr", 0.001, "--set", "schedule.min_lr=0.01"], ["schedule.min_lr:", "optim.lr"]),
    (["--seed", -3], ["train.seed: must be >= 0"]),
    (["--set", "model=3", "--hidden", 8], ["model: expected a table of keys"]),
    (["--set", "model=3"], ["model: expected a table of keys"]),
    (["--run-dir", "runs/a\nb"], ["run_dir:", "control character"]),
    (["--layers", 100_000], ["model.num_layers: must be in [1, 64]"]),
    (["--hidden", 10 ** 6], ["model.hidden_size: must be in [1, 65536]"]),
])
def test_nonsense_config_exits_2_naming_the_key(tmp_path, flags, fragments):
    data = write_windows(str(tmp_path / "d.h5"))
    assert_exit_2_naming(run_cli(["train", "--data", data, "--run-dir", tmp_path / "run", *flags], timeout=60),
                         *fragments)
    assert not (tmp_path / "run").exists()


def test_config_directory_and_run_dir_file_exit_2(tmp_path):
    data = write_windows(str(tmp_path / "d.h5"))
    assert_exit_2_naming(run_cli(["train", "--data", data, "--config", tmp_path]), f"config file {tmp_path}:",
                         "is a directory")
    taken = tmp_path / "taken"
    taken.write_text("not a run directory\n")
    assert_exit_2_naming(run_cli(["train", "--data", data, "--run-dir", taken]), f"run_dir: {taken} is a file")
    assert_exit_2_naming(run_cli(["train", "--data", data, "--run-dir", taken / "sub"], ranks=2),
                         f"run_dir: {taken} is a file")
    assert taken.read_text() == "not a run directory\n"


def edited(path, **attributes):
    with h5py.File(path, "a") as handle:
        for name, value in attributes.items():
            handle.attrs[name] = value
    return path


def test_nonsense_data_files_exit_2_naming_the_attribute(tmp_path):
    import numpy as np
    run_dir = tmp_path / "run"
    overlap = edited(write_windows(str(tmp_path / "o.h5")), split_train=np.array([0, 30]), split_val=np.array([20, 40]))
    assert_exit_2_naming(run_cli(["train", "--data", overlap, "--run-dir", run_dir]), "split_train", "split_val",
                         "overlap")
    empty = edited(write_windows(str(tmp_path / "e.h5")), split_train=np.array([0, 0]), split_val=np.array([0, 40]))
    assert_exit_2_naming(run_cli(["train", "--data", empty, "--run-dir", run_dir]), "split_train = [0, 0] is empty")
    for value in ("1", np.array([1, 2])):
        schema = edited(write_windows(str(tmp_path / "s.h5")), hpcrnn_schema=value)
        assert_exit_2_naming(run_cli(["train", "--data", schema, "--run-dir", run_dir]), "hpcrnn_schema",
                             "expected the integer 1")
    labels = write_windows(str(tmp_path / "l.h5"), labels=3)
    with h5py.File(labels, "a") as handle:
        handle["labels"][17] = 10 ** 6
    assert_exit_2_naming(run_cli(["train", "--data", labels, "--run-dir", run_dir], ranks=2),
                         "/labels at sample 17 is 1000000")
    assert not run_dir.exists()


def info_with_coretype(coretype):
    """`hpcrnn info` in a child whose environment has OPENBLAS_CORETYPE=coretype (None: without it); this
    process's environment is left as it is."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    result = subprocess.run([sys.executable, "-m", "hpcrnn", "info"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


BELOW = {"AVX-512": "Haswell", "AVX2": "Sandybridge", "AVX": "Nehalem", "SSE2": "Nehalem"}   # a pin under the CPU


def test_info_warns_when_openblas_is_pinned_below_the_cpu():
    from hpcrnn.kernels.blas_core import cpu_flags, cpu_isa
    isa = cpu_isa(cpu_flags())
    pin = BELOW[isa]
    pinned = info_with_coretype(pin)
    fields = dict(line.split(None, 1) for line in pinned.splitlines() if line.strip())
    assert fields["kernel_blas_core"] == pin and fields["cpu_isa"] == isa
    warnings = [line for line in pinned.splitlines() if line.startswith("warning:")]
    if isa == "SSE2":                       # nothing narrower to pin an SSE2-only CPU to: no warning
        assert warnings == [], pinned
    else:
        assert len(warnings) == 1 and f"OPENBLAS_CORETYPE={pin}" in warnings[0], pinned
    own = info_with_coretype(None)
    fields = dict(line.split(None, 1) for line in own.splitlines() if line.strip())
    assert "OPENBLAS_CORETYPE" not in own and fields["cpu_isa"] == isa
