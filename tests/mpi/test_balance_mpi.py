"""The slowest rank under MPI: with rank 1 made slower (a sleep added to its forward_backward by this test),
every metrics line names rank 1 as slowest_rank with its compute as t_compute_max, rank 0 warns about the
imbalance, and summary.json holds every rank's totals, host and affinity. Runs under mpiexec -n 2 and -n 3."""
import io
import json
import os
import time

import pytest
from mpi4py import MPI

from hpcrnn.config import load_config
from hpcrnn.model import Model
from hpcrnn.run import train
from helpers import write_windows

WORLD = MPI.COMM_WORLD
DELAY_S = 0.1
pytestmark = pytest.mark.skipif(WORLD.size < 2, reason="needs at least 2 ranks")


def slow_on_rank_one(monkeypatch):
    original = Model.forward_backward

    def slower(self, *args, **kwargs):
        time.sleep(DELAY_S)
        return original(self, *args, **kwargs)
    if WORLD.rank == 1:
        monkeypatch.setattr(Model, "forward_backward", slower)


def test_slowest_rank_is_recorded_and_warned_about(shared_dir, monkeypatch):
    data = os.path.join(shared_dir, "d.h5")
    if WORLD.rank == 0:
        write_windows(data, n=40)
    WORLD.Barrier()
    slow_on_rank_one(monkeypatch)
    run_dir = os.path.join(shared_dir, "run")
    config = load_config(None, [f"data.path={data}", f"run_dir={run_dir}", "model.cell=lstm", "model.hidden_size=8",
                                "train.epochs=2", "train.batch_size=12", "train.progress=line",
                                "data.val_fraction=0", "checkpoint.every_epochs=0"])
    stream = io.StringIO()
    summary = train(config, WORLD, stream=stream)
    steps = summary["steps"]
    per_rank = summary["per_rank"]
    assert [r["rank"] for r in per_rank] == list(range(WORLD.size))
    assert per_rank[1]["total_t_compute"] >= steps * DELAY_S
    assert per_rank[0]["total_t_compute"] < per_rank[1]["total_t_compute"] - steps * DELAY_S / 2
    assert per_rank[0]["total_t_comm"] > per_rank[1]["total_t_comm"]      # rank 0 waited for rank 1
    assert all(r["host"] and r["affinity"] and "total_t_io" in r for r in per_rank)
    if WORLD.rank != 0:
        return
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        records = [json.loads(line) for line in handle if "event" not in line]
    assert len(records) == steps == 8
    for record in records:
        assert record["slowest_rank"] == 1
        assert record["t_compute_max"] >= DELAY_S and record["t_compute_max"] > record["t_compute"]   # rank 0's
        assert record["t_compute_median"] <= record["t_compute_max"]
    assert "warning: rank 1 computed" in stream.getvalue() and "epoch 0" in stream.getvalue()
    with open(os.path.join(run_dir, "summary.json")) as handle:
        assert json.load(handle)["per_rank"][1]["total_t_compute"] >= steps * DELAY_S
