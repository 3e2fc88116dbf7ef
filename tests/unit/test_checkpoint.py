"""Checkpoints: atomic write, checksum, truncated/damaged files, fallback to the previous one, retention."""
import os

import numpy as np
import pytest

from hpcrnn import checkpoint as ckpt


def arrays(step):
    return {"params/w": np.full((3, 4), step, dtype=np.float32), "optimizer/m": np.arange(5.0) * step}


def test_round_trip_and_checksum(tmp_path):
    path = ckpt.path_for(tmp_path, 7)
    ckpt.save(path, arrays(7), {"step": 7})
    loaded, meta = ckpt.load(path)
    assert meta == {"step": 7}
    np.testing.assert_array_equal(loaded["params/w"], arrays(7)["params/w"])
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_truncated_and_bitflipped_files_are_rejected_and_skipped(tmp_path):
    for step in (1, 2, 3):
        ckpt.save(ckpt.path_for(tmp_path, step), arrays(step), {"step": step})
    newest = ckpt.path_for(tmp_path, 3)
    size = os.path.getsize(newest)
    with open(newest, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(ckpt.CheckpointError, match="step-000000003.h5"):
        ckpt.load(newest)
    warnings = []
    path, loaded, meta = ckpt.load_latest(str(tmp_path), warn=warnings.append)
    assert meta["step"] == 2 and path.endswith("step-000000002.h5")
    assert len(warnings) == 1 and "damaged" in warnings[0]
    # Flip bytes of a dataset's data in the middle checkpoint: the checksum catches it.
    data = bytearray(open(path, "rb").read())
    needle = np.full((3, 4), 2, dtype=np.float32).tobytes()
    at = bytes(data).find(needle)
    assert at > 0
    data[at] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch"):
        ckpt.load(path)
    assert ckpt.load_latest(str(tmp_path), warn=warnings.append)[2]["step"] == 1


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = ckpt.path_for(tmp_path, 5)
    ckpt.save(path, arrays(1), {"step": 1})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        ckpt.save(path, arrays(2), {"step": 2})
    monkeypatch.undo()
    assert ckpt.load(path)[1] == {"step": 1}
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def test_prune_keeps_newest(tmp_path):
    for step in range(1, 6):
        ckpt.save(ckpt.path_for(tmp_path, step), arrays(step), {"step": step})
    ckpt.prune(str(tmp_path), 2)
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == \
        ["step-000000005.h5", "step-000000004.h5"]


def test_best_is_neither_listed_nor_pruned_nor_resumed_from(tmp_path):
    best = ckpt.best_path(str(tmp_path))
    ckpt.save(best, arrays(1), {"step": 1})
    for step in range(2, 6):
        ckpt.save(ckpt.path_for(tmp_path, step), arrays(step), {"step": step})
    assert best not in ckpt.list_checkpoints(str(tmp_path))
    ckpt.prune(str(tmp_path), 1)
    assert sorted(os.listdir(tmp_path)) == ["best.h5", "step-000000005.h5"]
    assert ckpt.load(best)[1] == {"step": 1}
    assert ckpt.load_latest(str(tmp_path))[2] == {"step": 5}
