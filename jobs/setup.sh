#!/usr/bin/env bash
# Installs hpcrnn's real stack into .venv: MPI, parallel HDF5, mpi4py bound to that MPI, h5py built with MPI,
# numba; then runs a 2-rank smoke test. Idempotent: a second run only re-checks (seconds).
# Usage: jobs/setup.sh [--dev]     (--dev adds pytest and the PyTorch CPU build used by the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1
VENV=${HPCRNN_VENV:-.venv}
PY=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- 1. MPI and parallel HDF5 -------------------------------------------------------------------
APT_PKGS="mpich libmpich-dev libhdf5-mpich-dev pkg-config"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
  missing=""
  for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    say "installing system packages:$missing"
    apt-get update -qq || die "apt-get update failed (no network to the Debian mirror?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || die "apt-get install$missing failed"
  fi
  MPICC=$(command -v mpicc.mpich)
  MPIEXEC=$(command -v mpiexec.mpich || command -v mpiexec.hydra)
  HDF5_PC=hdf5-mpich
else
  # Cluster without root: use the MPI wrapper and parallel HDF5 of the module environment.
  MPICC=${MPICC:-$(command -v mpicc || true)}
  MPIEXEC=${MPIEXEC:-$(command -v mpiexec || command -v srun || true)}
  [ -n "$MPICC" ] || die "no MPI compiler wrapper (mpicc) on PATH: 'module load' an MPI, or install mpich (apt install mpich libmpich-dev)"
  [ -n "$MPIEXEC" ] || die "no MPI launcher (mpiexec or srun) on PATH: 'module load' an MPI"
  [ -n "${HDF5_DIR:-}" ] || command -v h5pcc >/dev/null || die "no parallel HDF5 found (h5pcc or HDF5_DIR): 'module load' a parallel hdf5, or apt install libhdf5-mpich-dev"
  HDF5_PC=""
fi
say "MPI compiler: $MPICC; launcher: $MPIEXEC"

# ---- 2. virtual environment ------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; $PY -m venv "$VENV" || die "python3 -m venv failed (apt install python3-venv)"; }
VPY="$VENV/bin/python"
pipi() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }
"$VPY" -c "import matplotlib" 2>/dev/null && "$VPY" - <<'PY' 2>/dev/null || pipi "numpy>=1.24" "numba>=0.59" scipy "Cython>=3" pkgconfig "setuptools>=77" wheel "matplotlib>=3.6"
import numpy, numba, scipy, Cython, pkgconfig, setuptools
assert int(setuptools.__version__.split(".")[0]) >= 77, "setuptools too old to build h5py"
PY

# ---- 3. mpi4py built against this MPI ------------------------------------------------------------
if ! "$VPY" -c "import mpi4py.MPI" 2>/dev/null; then
  say "building mpi4py against $MPICC (a few minutes the first time; pip caches the wheel)"
  MPICC="$MPICC" pipi --no-binary=mpi4py --no-build-isolation "mpi4py>=3.1" || die "mpi4py build failed: check that $MPICC compiles a C program"
fi

# ---- 4. h5py built with MPI (parallel HDF5) -------------------------------------------------------
if ! "$VPY" -c "import h5py,sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
  say "building h5py with MPI (about 2 minutes the first time)"
  "$VPY" -m pip uninstall -q -y h5py >/dev/null 2>&1 || true
  if [ -n "$HDF5_PC" ]; then export HDF5_PKGCONFIG_NAME=$HDF5_PC; fi
  CC="$MPICC" HDF5_MPI=ON pipi --no-binary=h5py --no-build-isolation "h5py>=3.10" \
    || die "h5py build with MPI failed: parallel HDF5 headers needed (apt install libhdf5-mpich-dev, or module load a parallel hdf5 and set HDF5_DIR)"
fi

# ---- 5. hpcrnn itself (+ test extras) -------------------------------------------------------------
if ! "$VPY" -c "import hpcrnn" 2>/dev/null || [ pyproject.toml -nt "$VENV/.hpcrnn-installed" ]; then
  pipi --no-build-isolation --no-deps -e . || die "pip install -e . failed"
  touch "$VENV/.hpcrnn-installed"
fi
if [ "$DEV" = 1 ]; then
  "$VPY" -c "import pytest, matplotlib" 2>/dev/null || pipi pytest matplotlib
  if ! "$VPY" -c "import torch" 2>/dev/null; then
    say "installing PyTorch 2.13.0 CPU (reference for kernel tests and benchmarks)"
    pipi "torch==2.13.0" || say "WARNING: torch 2.13.0 could not be installed: make test will stop on it (plain pytest skips the PyTorch comparisons)"
  fi
fi

# ---- 6. smoke test: Allreduce + collective MPI-IO write/read on 2 ranks ----------------------------
echo "$MPIEXEC" > "$VENV/.mpiexec"
"$MPIEXEC" -n 2 "$VPY" -m hpcrnn.smoke || die "2-rank smoke test failed (see above)"
say "ready: $VENV (activate with 'source $VENV/bin/activate')"
