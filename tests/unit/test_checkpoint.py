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


def fd_path(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def durability_log(monkeypatch):
    """Records os.fsync (with the path behind the fd and the file size then) and os.replace, in call order."""
    log, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", fd_path(fd), os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst, **kw):
        log.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        real_replace(src, dst, **kw)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


def test_save_fsyncs_file_then_renames_then_fsyncs_directory(tmp_path, durability_log):
    path = os.path.abspath(ckpt.path_for(str(tmp_path), 3))
    ckpt.save(path, arrays(3), {"step": 3})
    renames = [i for i, entry in enumerate(durability_log) if entry[0] == "replace"]
    assert len(renames) == 1, durability_log
    at = renames[0]
    _, temporary, final = durability_log[at]
    assert final == path and temporary != path and os.path.dirname(temporary) == str(tmp_path)
    size = os.path.getsize(path)
    assert ("fsync", temporary, size) in durability_log[:at], \
        f"the temporary file was not fsynced whole before the rename: {durability_log}"
    assert any(entry[:2] == ("fsync", str(tmp_path)) for entry in durability_log[at + 1:]), \
        f"the directory was not fsynced after the rename: {durability_log}"
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def big_arrays():
    return {"params/w": np.arange(300_000, dtype=np.float64), "optimizer/m": np.ones(1000)}


@pytest.fixture
def file_size_limit():
    """Sets RLIMIT_FSIZE (writes past it fail with EFBIG, as on a full disk) for the duration of a test."""
    import resource
    import signal
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_failure_mid_write_keeps_previous_and_leaves_no_temporary(tmp_path, file_size_limit):
    path = ckpt.path_for(str(tmp_path), 5)
    ckpt.save(path, arrays(1), {"step": 1})
    file_size_limit(256 << 10)            # the new image is ~2.4 MB: the write stops a tenth of the way
    with pytest.raises(OSError):
        ckpt.save(path, big_arrays(), {"step": 2})
    assert ckpt.load(path)[1] == {"step": 1}
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def test_failed_fsync_keeps_previous_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = ckpt.path_for(str(tmp_path), 5)
    ckpt.save(path, arrays(1), {"step": 1})

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ckpt.save(path, arrays(2), {"step": 2})
    monkeypatch.undo()
    assert ckpt.load(path)[1] == {"step": 1}
    assert os.listdir(tmp_path) == [os.path.basename(path)]


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


def test_prune_reads_back_only_files_this_process_did_not_write(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        ckpt.save(ckpt.path_for(str(tmp_path), step), arrays(step), {"step": step})
    foreign = ckpt.path_for(str(tmp_path), 9)
    open(foreign, "w").write("not a checkpoint")
    loaded = []
    real_load = ckpt.load
    monkeypatch.setattr(ckpt, "load", lambda path: loaded.append(path) or real_load(path))
    ckpt.prune(str(tmp_path), 2)
    assert loaded == [foreign]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(ckpt.path_for(str(tmp_path), s)) for s in (2, 3, 9)]
