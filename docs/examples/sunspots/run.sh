#!/usr/bin/env bash
# The real-data example end to end (`make example`): fetch the sunspot series through pip, prepare it, train on
# 2 MPI ranks, evaluate the best checkpoint on the test years against the baselines, write the run report.
set -euo pipefail
PY=${PY:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-$(cat .venv/.mpiexec 2>/dev/null || command -v mpiexec)}
RANKS=${RANKS:-2}
OUT=runs/sunspots
mkdir -p "$OUT"
rm -rf "$OUT/run"
"$PY" docs/examples/sunspots/fetch.py "$OUT/sunspots.csv"
"$PY" -m hpcrnn prepare --input "$OUT/sunspots.csv" --out "$OUT/sunspots.h5" \
      --lookback 24 --horizon 3 --val-fraction 0.15 --test-fraction 0.15
$MPIEXEC -n "$RANKS" "$PY" -m hpcrnn train --config docs/examples/sunspots/sunspots.toml
$MPIEXEC -n "$RANKS" "$PY" -m hpcrnn evaluate --checkpoint "$OUT/run" --data "$OUT/sunspots.h5" --split test --season 11
$MPIEXEC -n "$RANKS" "$PY" -m hpcrnn report "$OUT/run" --season 11
