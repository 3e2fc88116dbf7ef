# hpcrnn: `make run` trains the demo model on 2 MPI ranks; `make test` runs the whole suite.
# Both install what they need first (jobs/setup.sh, idempotent).
VENV    ?= .venv
PY      := $(VENV)/bin/python
RANKS   ?= 2
RUN_DIR ?= runs/demo
MPIEXEC  = $(shell cat $(VENV)/.mpiexec 2>/dev/null || command -v mpiexec 2>/dev/null)
# Each rank on a core of its own: the launcher's binding flags (MPICH -bind-to core, Open MPI --bind-to core);
# `make run BIND=` launches unbound. Worked out when `run` expands it, after setup.
BIND    ?= $(shell $(PY) -m hpcrnn.placement "$(MPIEXEC)" 2>/dev/null)
export NUMBA_CACHE_DIR ?= $(CURDIR)/$(VENV)/numba-cache-$(shell uname -m)
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: setup setup-dev run example test test-unit test-mpi test-system mutate bench clean

setup:
	@jobs/setup.sh

setup-dev:
	@jobs/setup.sh --dev

run: setup
	@launcher="$(MPIEXEC)"; if [ -z "$$launcher" ] || ! command -v "$$launcher" >/dev/null; then \
	  echo "make run: MPI launcher '$$launcher' not found: install MPICH (apt install mpich) or 'module load' an MPI, then rerun 'make setup'" >&2; exit 1; fi
	rm -rf $(RUN_DIR)
	$(MPIEXEC) $(BIND) -n $(RANKS) $(PY) -m hpcrnn train --config data/demo.toml --run-dir $(RUN_DIR)
	$(MPIEXEC) $(BIND) -n $(RANKS) $(PY) -m hpcrnn evaluate --checkpoint $(RUN_DIR) --data data/mackey_glass.h5 --split val
	$(MPIEXEC) $(BIND) -n $(RANKS) $(PY) -m hpcrnn report $(RUN_DIR)

# The real-data example (docs/examples/sunspots): sunspot numbers fetched through pip, trained on $(RANKS) ranks,
# evaluated on the test years against the baselines; the report lands in runs/sunspots/run/report.md.
example: setup
	PY=$(PY) MPIEXEC="$(MPIEXEC) $(BIND)" RANKS=$(RANKS) docs/examples/sunspots/run.sh

test: setup-dev
	$(MAKE) --no-print-directory test-unit test-system test-mpi

# Under make the test extras (torch, matplotlib) are required: their absence fails instead of skipping
# (tests/conftest.py); -rs lists every skip with its reason. HPCRNN_REQUIRE_EXTRAS=0 make ... lets them skip.
test-unit test-system test-mpi: export HPCRNN_REQUIRE_EXTRAS ?= 1

test-unit:
	$(PY) -m pytest tests/unit -q -rs

test-system:
	$(PY) -m pytest tests/system -q -rs

# Every rank runs pytest; the tests are rank-aware. A failure on any rank aborts the job and each test has a
# time limit (tests/conftest.py); `timeout` is the last resort for a run that would hang anyway.
test-mpi:
	timeout -k 10 900 $(MPIEXEC) -n 2 $(PY) -m pytest tests/mpi -q -rs
	timeout -k 10 900 $(MPIEXEC) -n 3 $(PY) -m pytest tests/mpi -q -rs

# Plants each bug of tests/mutations.py in a scratch copy and runs the tests that must catch it (not in `make test`).
mutate:
	$(PY) tests/mutations.py

bench: setup-dev
	$(PY) bench/kernels.py

clean:
	rm -rf runs .pytest_cache build *.egg-info
