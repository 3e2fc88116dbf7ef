"""Rank placement: the launcher flags that bind each rank to its own cores, and the check at the start of a
run that ranks do not share cores and that a rank's compute threads fit in the cores it was given.

    python -m hpcrnn.placement LAUNCHER [THREADS]   prints the binding flags for LAUNCHER (the Makefile's)"""
import os
import shlex
import socket
import subprocess
import sys

from hpcrnn.log import int_ranges

BIND_WORDS = ("-bind-to", "--bind-to", "-binding", "--cpu-bind", "--cpu_bind", "--map-by", "-map-by")


def launcher_flavour(words, probe=True):
    """"mpich" (hydra), "openmpi", "srun" or "unknown" for a launcher command (a list of words): by the
    program's name, else (probe=True) by what `PROGRAM --version` prints."""
    name = os.path.basename(words[0]) if words else ""
    if name == "srun":
        return "srun"
    if "mpich" in name or "hydra" in name:
        return "mpich"
    if "openmpi" in name or "orterun" in name or name == "prterun":
        return "openmpi"
    if not probe or not name:
        return "unknown"
    try:
        text = subprocess.run([words[0], "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if "HYDRA" in text or "MPICH" in text:
        return "mpich"
    if "Open MPI" in text or "OpenRTE" in text or "Open RTE" in text:
        return "openmpi"
    return "unknown"


def bind_flags(flavour, threads=1):
    """The flags that bind each rank to `threads` cores of its own (none for an unknown launcher)."""
    threads = max(int(threads), 1)
    if flavour == "mpich":
        return ["-bind-to", "core" if threads == 1 else f"core:{threads}"]
    if flavour == "openmpi":
        return ["--bind-to", "core"] if threads == 1 else ["--map-by", f"slot:PE={threads}", "--bind-to", "core"]
    if flavour == "srun":
        return ["--cpu-bind=cores"]
    return []


def slot_flags(flavour, cpus):
    """The flags that bind rank r to cpus[r] (a launch sharing the node with other launches, each on its own
    cores); none for a launcher that cannot be told a CPU list."""
    listed = ",".join(str(cpu) for cpu in cpus)
    if flavour == "mpich":
        return ["-bind-to", f"user:{listed}"]
    if flavour == "openmpi":
        return ["--cpu-set", listed, "--bind-to", "core"]
    return []


def core_slots(cpus, need, count):
    """`count` disjoint lists of `need` CPUs each, taken in order from `cpus`; None when they do not fit."""
    cpus = sorted(cpus)
    if need < 1 or count * need > len(cpus):
        return None
    return [cpus[slot * need:(slot + 1) * need] for slot in range(count)]


def has_binding(words):
    """True when the command already asks for a placement (the user's choice wins)."""
    return any(word.split("=")[0] in BIND_WORDS for word in words)


def with_binding(words, threads=1, probe=True):
    """`words` (a launcher command before `-n P`) with the binding flags of its flavour appended, unless it
    already binds."""
    words = list(words)
    if has_binding(words):
        return words
    return words + bind_flags(launcher_flavour(words, probe), threads)


# ---- the check at the start of a run --------------------------------------------------------------------
def blas_threads():
    """BLAS threads of this process as the environment sets them (hpcrnn defaults them to 1)."""
    from hpcrnn.process import BLAS_THREAD_VARIABLES
    for name in BLAS_THREAD_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def describe(rank, prefetch, rows=1):
    """This rank's placement: host, the CPUs it may run on, and its threads by kind (rows: the model's row
    block threads, each calling BLAS)."""
    import numba
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {"rank": rank, "host": socket.gethostname(), "affinity": affinity,
            "threads": {"numba": numba.get_num_threads(), "blas": blas_threads(), "rows": int(rows),
                        "prefetch": int(bool(prefetch))}}


def compute_threads(threads):
    """Threads that compute at once: each of the model's row threads runs kernels that call BLAS from that
    thread (rows x BLAS threads), or numba's pool, whichever is larger (they do not run together). The
    prefetch thread mostly copies a batch between steps: it is reported in summary.json, not counted."""
    return max(threads["numba"], threads.get("rows", 1) * threads["blas"], 1)


def placement_warnings(records):
    """Warnings for the ranks' records (describe()): ranks of one host that share cores, ranks whose compute
    threads exceed their cores."""
    warnings, by_host = [], {}
    for record in records:
        by_host.setdefault(record["host"], []).append(record)
    for host, ranks in by_host.items():
        shared = {}
        for record in ranks:
            for cpu in record["affinity"]:
                shared.setdefault(cpu, []).append(record["rank"])
        pairs = sorted({tuple(r) for r in shared.values() if len(r) > 1})
        if pairs:
            cpus = sorted(cpu for cpu, r in shared.items() if len(r) > 1)
            warnings.append(f"warning: ranks share cores on {host} (ranks {', '.join(map(str, sorted({x for p in pairs for x in p})))} "
                            f"on CPU(s) {compact(cpus)}): bind each rank to its own cores (mpiexec -bind-to core, "
                            f"Open MPI --bind-to core, srun --cpu-bind=cores); see docs/throughput.md")
    for record in records:
        need, have = compute_threads(record["threads"]), len(record["affinity"])
        if have and need > have:
            warnings.append(f"warning: rank {record['rank']} on {record['host']} runs {need} compute threads on "
                            f"{have} core(s) (numba {record['threads']['numba']}, row threads {record['threads'].get('rows', 1)} "
                            f"x BLAS {record['threads']['blas']}): "
                            f"give it more cores or fewer threads")
    return warnings


def compact(cpus):
    """[0, 1, 2, 5] -> "0-2,5"."""
    return int_ranges(cpus)


def check_placement(comm, prefetch, say, rows=1):
    """Collective: gathers every rank's describe() and lets `say` (rank 0's writer) print the warnings.
    Returns the records, in rank order, for summary.json."""
    from hpcrnn import comm as mpi
    records = mpi.allgather_object(comm, describe(comm.rank, prefetch, rows))
    for warning in placement_warnings(records):
        say(warning)
    return records


def main(argv):
    if not argv or len(argv) > 2:
        sys.stderr.write("usage: python -m hpcrnn.placement LAUNCHER [THREADS]\n")
        return 2
    words = shlex.split(argv[0])
    print(shlex.join(bind_flags(launcher_flavour(words), argv[1] if len(argv) > 1 else 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
