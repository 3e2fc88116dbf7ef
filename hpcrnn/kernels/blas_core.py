"""Which kernels the kernels' BLAS runs on this CPU: OpenBLAS's core type, the CPU's widest vector ISA, and the
one-line warning when an environment variable pins the BLAS below what the CPU supports. Reads, never changes,
the user's BLAS settings."""
import ctypes
import functools
import os

ISA_ORDER = ("SSE2", "AVX", "AVX2", "AVX-512")   # narrowest to widest
# OpenBLAS core types (openblas_get_corename, lower case) by the widest vector ISA their sgemm kernels use.
CORE_ISA = {
    "skylakex": "AVX-512", "cooperlake": "AVX-512", "sapphirerapids": "AVX-512", "zen5": "AVX-512",
    "haswell": "AVX2", "zen": "AVX2", "excavator": "AVX2",
    "sandybridge": "AVX", "bulldozer": "AVX", "piledriver": "AVX", "steamroller": "AVX",
    "nehalem": "SSE2", "penryn": "SSE2", "core2": "SSE2", "prescott": "SSE2", "barcelona": "SSE2",
}
PIN_VARIABLES = ("OPENBLAS_CORETYPE",)
# bench/kernels.py, 1 thread, sgemm 2048^3, AMD EPYC family 26 (Zen 5), numpy 2.4.6's OpenBLAS 0.3.31.
PIN_COST = "sgemm 113 GFLOP/s with Haswell kernels vs 196-217 with SkylakeX ones on an AVX-512 Zen 5 core"


def cpu_isa(flags):
    """The widest vector ISA among /proc/cpuinfo `flags` (a set of strings), e.g. "AVX-512"."""
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags and "fma" in flags:
        return "AVX2"
    return "AVX" if "avx" in flags else "SSE2"


def cpu_flags():
    """The first CPU's flags from /proc/cpuinfo; an empty set where there is none (not Linux/x86)."""
    from hpcrnn.runinfo import cpuinfo
    return set(cpuinfo(("flags",)).get("flags", "").split())


def core_isa(corename):
    """The widest ISA of an OpenBLAS core type's kernels, or None for a name not known here."""
    return CORE_ISA.get((corename or "").lower())


def pin_warning(corename, isa, environ):
    """A one-line warning when the BLAS core type uses a narrower ISA than the CPU has, else None.
    corename: OpenBLAS's core type; isa: the CPU's widest ISA (cpu_isa); environ: the process environment."""
    kernels_isa = core_isa(corename)
    if kernels_isa is None or isa not in ISA_ORDER or ISA_ORDER.index(kernels_isa) >= ISA_ORDER.index(isa):
        return None
    pins = [f"{name}={environ[name]}" for name in PIN_VARIABLES if environ.get(name)]
    if pins:
        why = f"{' '.join(pins)} pins it"
        fix = f"unset {' '.join(p.split('=')[0] for p in pins)} to let OpenBLAS pick its own kernels"
    else:
        why = "this OpenBLAS does not detect the CPU"
        fix = "use a newer numpy/OpenBLAS"
    return (f"warning: the kernels' BLAS runs OpenBLAS {corename} ({kernels_isa}) kernels on an {isa} CPU: {why} "
            f"(measured cost: {PIN_COST}); {fix}")


def openblas_core(library_path):
    """openblas_get_corename of the OpenBLAS at library_path (any of its symbol prefixes/suffixes), or None."""
    if not library_path:
        return None
    try:
        library = ctypes.CDLL(library_path)
    except OSError:
        return None
    for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                 "openblas_get_corename"):
        function = getattr(library, name, None)
        if function is not None:
            function.restype = ctypes.c_char_p
            return function().decode()
    return None


@functools.lru_cache(maxsize=None)
def blas_core():
    """{"kernel_blas_core": core type, "cpu_isa": widest ISA} of this process, and the pin warning or None
    (worked out once: neither the library, its core type nor the CPU change while the process runs)."""
    from hpcrnn.kernels.common import blas_library
    core = openblas_core(blas_library())
    isa = cpu_isa(cpu_flags())
    return {"kernel_blas_core": core or "unknown", "cpu_isa": isa}, pin_warning(core, isa, os.environ)
