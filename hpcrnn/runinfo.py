"""Versions and machine facts for `hpcrnn info`, summaries, checkpoints and scaling reports."""
import os
import platform
import sys


def cpuinfo(keys):
    """{key: value} of the first CPU's /proc/cpuinfo lines named in keys ({} where there is no such file)."""
    found = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in keys and key.strip() not in found:
                    found[key.strip()] = value.strip()
    except OSError:
        pass
    return found


def cpu_model():
    return cpuinfo(("model name",)).get("model name") or platform.processor() or platform.machine()


def cpu_id():
    """"family F model M" of the CPU (x86 /proc/cpuinfo), "" where unknown."""
    found = cpuinfo(("cpu family", "model"))
    return f"family {found['cpu family']} model {found['model']}" if len(found) == 2 else ""


def versions():
    """Software versions as a flat dict (cheap: no kernel compilation)."""
    import h5py
    import numba
    import numpy
    from hpcrnn import __version__
    from hpcrnn.comm import library_version, mpi4py_version
    return {"hpcrnn": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "numba": numba.__version__, "mpi4py": mpi4py_version(), "mpi_library": library_version(),
            "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "hdf5_mpi_io": bool(h5py.get_config().mpi),
            **blas()}


def blas():
    """The BLAS the kernels call, its core type (which kernels OpenBLAS runs) and the CPU's widest vector ISA."""
    from hpcrnn.kernels.blas_core import blas_core
    from hpcrnn.kernels.common import blas_name
    return {"kernel_blas": blas_name(), **blas_core()[0]}


def blas_warning():
    """The one-line warning when the kernels' BLAS runs kernels below the CPU's ISA (a pinned core type), or None."""
    from hpcrnn.kernels.blas_core import blas_core
    return blas_core()[1]


def machine():
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cpu_id": cpu_id(), "cores": os.cpu_count(), "cores_available": affinity,
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
    return {"numba_threads": numba.get_num_threads(), "numba_threading_layer": str(layer),
            "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS", "unset")}


def report():
    """All of the above as one dict for `hpcrnn info` and reports."""
    return {**versions(), "executable": sys.executable, **threading(), **machine()}


def format_report(info):
    width = max(len(k) for k in info)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in info.items())
