"""The line every bench prints first: CPU family/model, widest vector ISA flags, the OpenBLAS core type that
runs in this environment (asked of a child python with OPENBLAS_VERBOSE=2), and the load average."""
import os
import subprocess
import sys

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


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
