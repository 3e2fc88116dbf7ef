"""The data pipeline: schema v1 HDF5 files, sharding, the streaming batch loader, `prepare` and `synth`.

Names are imported on first use, so `import hpcrnn.data` alone loads neither h5py nor mpi4py."""
_EXPORTS = {
    "DatasetInfo": "schema", "open_dataset": "schema",
    "BatchLoader": "loader", "Batch": "loader", "iterate_in_order": "loader", "split_ranges": "splits",
    "rank_block": "loader", "blockdist": "shard", "epoch_order": "shard",
    "Split": "splits", "choose_splits": "splits",
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib
    return getattr(importlib.import_module(f"hpcrnn.data.{_EXPORTS[name]}"), name)
