"""What the benches share: the BLAS as a user gets it (drop_blas_pins, called before numpy loads), the line
every bench prints first (describe: CPU family/model, widest vector ISA flags, the OpenBLAS core type that runs
in this environment, asked of a child python with OPENBLAS_VERBOSE=2, and the load average), and the MPI
launcher with each rank bound to its cores (launcher)."""
import os
import subprocess
import sys

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def drop_blas_pins():
    """Drops OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from this process's environment (and so from every run it
    starts), so that OpenBLAS detects the core as users get it. Benchmarks only, never tests or CI; call it
    before numpy loads."""
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(name, None)


def launcher(threads=1, bind=True):
    """The launcher words before `-n P`, as `hpcrnn scaling run` finds them, with the flags that bind each rank
    to `threads` cores of its own (bind=False: none)."""
    from hpcrnn.placement import with_binding
    from hpcrnn.scaling.sweep import launcher_prefix
    words = launcher_prefix("mpiexec", "")
    return with_binding(words, threads) if bind else words


def describe():
    info = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    flags = info.get("Flags", "").split()
    isa = " ".join(flag for flag in ISA_FLAGS if flag in flags)
    verbose = subprocess.run([sys.executable, "-c", "import numpy"], capture_output=True, text=True,
                             env={**os.environ, "OPENBLAS_VERBOSE": "2"})
    core = next((line.split(":", 1)[1].strip() for line in (verbose.stdout + verbose.stderr).splitlines()
                 if line.startswith("Core:")), "unknown")
    return (f"CPU {info.get('Model name', '?')} family {info.get('CPU family', '?')} model {info.get('Model', '?')}, "
            f"{os.cpu_count()} CPUs; ISA {isa}; OpenBLAS core {core}; load average "
            f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
