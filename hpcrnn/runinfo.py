"""Versions and machine facts for `hpcrnn info`, summaries, checkpoints and scaling reports."""
import os
import platform
import sys


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    """Software versions as a flat dict (cheap: no kernel compilation)."""
    import h5py
    import numba
    import numpy
    from hpcrnn import __version__
    from hpcrnn.comm import library_version, mpi4py_version
    return {"hpcrnn": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "numba": numba.__version__, "mpi4py": mpi4py_version(), "mpi_library": library_version(),
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "hdf5_mpi_io": bool(h5py.get_config().mpi)}


def machine():
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "cores_available": affinity,
            "platform": platform.platform(), "hostname": platform.node()}


def threading():
    import numba
    from numba.np.ufunc import parallel
    try:
        layer = numba.threading_layer()
    except ValueError:
        # The layer is chosen at the first parallel launch; probe one so the report is accurate.
        parallel._launch_threads()
        layer = numba.threading_layer()
    from hpcrnn.kernels.common import blas_name
    return {"numba_threads": numba.get_num_threads(), "numba_threading_layer": str(layer),
            "kernel_blas": blas_name(),
            "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS", "unset")}


def report():
    """All of the above as one dict for `hpcrnn info` and reports."""
    return {**versions(), "executable": sys.executable, **threading(), **machine()}


def format_report(info):
    width = max(len(k) for k in info)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in info.items())
