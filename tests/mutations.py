"""`make mutate`: plants each bug below, one at a time, in a scratch copy of the repository (never the real tree)
and runs only the tests named to catch it; prints caught / NOT CAUGHT / STALE and exits non-zero unless all
are caught. Usage: python tests/mutations.py [--only ID ...] [--list] [--keep-logs]

Each entry is a self-contained record: id, what it breaks, edits (file under the repository, the exact text to
replace, found exactly once, and its replacement), `tests` (pytest arguments, run serially) and `mpi` (pytest
arguments, run under mpiexec -n `ranks`, 2 by default). A snippet no longer found after a refactor is STALE
(a failure): update the record. Before any mutation the named tests must pass on the unmodified copy."""
import argparse
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from helpers import mpiexec   # tests/ is sys.path[0] when this script runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPIED = ("hpcrnn", "tests", "pyproject.toml", "Makefile", "jobs", "data")
RUN_TIMEOUT_S = 300

STEP = "tests/unit/test_train_step.py::test_first_sgd_step_is_lr_clip_mean_gradient"
RESUME = "tests/unit/test_train_step.py::test_resume_continues_bitwise"
STEP_MPI = "tests/mpi/test_train_step_mpi.py::test_first_sgd_step_is_lr_clip_global_mean_gradient"
EVALUATE_MPI = "tests/mpi/test_evaluate_mpi.py"
DURABLE = "tests/unit/test_checkpoint.py::test_save_fsyncs_file_then_renames_then_fsyncs_directory"
OPTIM_REFERENCE = "tests/unit/test_optim.py::test_matches_stored_reference_steps"
STALL = "tests/system/test_stall.py::test_rank_held_in_training_step_is_named_within_the_timeout"
SAFETY = "tests/system/test_run_safety.py::"

MUTATIONS = [
    dict(id="grad-not-divided", what="the global gradient sum is not divided by the global sample count",
         edits=[("hpcrnn/train.py", "clip_factor(sq_norm, c.optim.clip_norm) / count)",
                 "clip_factor(sq_norm, c.optim.clip_norm))")], tests=[STEP]),
    dict(id="grad-local-count", what="the gradient is divided by the rank's own sample count, not the global one",
         edits=[("hpcrnn/train.py", "        lr, grad_norm = self.update(totals)\n",
                 "        totals.count = float(len(batch.x))\n        lr, grad_norm = self.update(totals)\n")],
         mpi=[STEP_MPI]),
    dict(id="clip-ignored", what="gradient clipping is never applied",
         edits=[("hpcrnn/train.py", "clip_factor(sq_norm, c.optim.clip_norm) / count)", "1.0 / count)")],
         tests=[STEP]),
    dict(id="metrics-loss-sum", what="the logged training loss is the sum over samples, not the mean",
         edits=[("hpcrnn/train.py", '"loss": totals.loss_sum / max(totals.count, 1.0),', '"loss": totals.loss_sum,')],
         tests=[STEP]),
    dict(id="bcast-removed", what="initial parameters are not broadcast from rank 0",
         edits=[("hpcrnn/train.py", "        mpi.bcast_array(comm, self.model.params)\n", "")],
         mpi=["tests/mpi/test_train_step_mpi.py::test_initial_parameters_are_rank_0s"]),
    dict(id="shard-drops-last", what="the last rank's share of every global batch loses its last sample",
         edits=[("hpcrnn/data/shard.py", "    return start, start + count\n",
                 "    return start, start + count - (1 if count > 1 and rank == size - 1 else 0)\n")],
         tests=[STEP]),
    dict(id="eval-per-rank-means", what="evaluate averages the ranks' mean losses instead of sum / global count",
         edits=[("hpcrnn/evaluate.py", "    if comm.size > 1:\n        mpi.allreduce_sum(comm, sums)\n",
                 "    sums[0] /= max(sums[1], 1.0)\n    if comm.size > 1:\n        mpi.allreduce_sum(comm, sums)\n"
                 "    sums[0] *= sums[1] / comm.size\n")],
         mpi=[EVALUATE_MPI]),
    dict(id="eval-rmse-no-sqrt", what="evaluate reports the mean squared error as rmse",
         edits=[("hpcrnn/evaluate.py", 'out["rmse"] = math.sqrt(total["sq_err_sum"] / elems)',
                 'out["rmse"] = total["sq_err_sum"] / elems')],
         mpi=[EVALUATE_MPI]),
    dict(id="predict-local-rows", what="predict writes each rank's rows at rank-local offsets",
         edits=[("hpcrnn/predict.py", "        for batch in iterate_in_order(info, (0, n), batch_size, comm, "
                 "dtype=model.dtype):\n            problem = problem or batch.problem\n            if len(batch.indices):\n"
                 "                first = int(batch.indices[0])\n",
                 "        local = 0\n        for batch in iterate_in_order(info, (0, n), batch_size, comm, "
                 "dtype=model.dtype):\n            problem = problem or batch.problem\n            if len(batch.indices):\n"
                 "                first, local = local, local + len(batch.indices)\n")],
         mpi=[EVALUATE_MPI + "::test_cli_predict_rows_match_model_predict"]),
    dict(id="allreduce-no-timeout", what="the training step's Allreduce is called without the stall timeout",
         edits=[("hpcrnn/comm.py", "allreduce_sum(self.comm, self.buffer, self.timeout_s)",
                 "allreduce_sum(self.comm, self.buffer)")],
         tests=[STALL + "[fused]"]),
    dict(id="stall-deadline-x5", what="the stall inspector waits five times train.comm_timeout_s",
         edits=[("hpcrnn/comm.py", "deadline = time.perf_counter() + timeout_s",
                 "deadline = time.perf_counter() + 5 * timeout_s")],
         tests=[STALL + "[overlap]"]),
    dict(id="ckpt-no-file-fsync", what="checkpoints are renamed into place without fsyncing the file",
         edits=[("hpcrnn/checkpoint.py", "            os.fsync(handle.fileno())\n", "")], tests=[DURABLE]),
    dict(id="ckpt-no-dir-fsync", what="the checkpoint directory is not fsynced after the rename",
         edits=[("hpcrnn/checkpoint.py", "        _fsync_dir(os.path.dirname(os.path.abspath(path)))\n", "")],
         tests=[DURABLE]),
    dict(id="ckpt-in-place", what="checkpoints are written in place instead of to a temporary file + rename",
         edits=[("hpcrnn/checkpoint.py", 'tmp = f"{path}.tmp-{os.getpid()}"', "tmp = path")],
         tests=["tests/unit/test_checkpoint.py::test_failure_mid_write_keeps_previous_and_leaves_no_temporary"]),
    dict(id="resume-drops-optimizer", what="resume restores the parameters but not the optimizer state",
         edits=[("hpcrnn/train.py", '        self.optimizer.load_state(optimizer_state, meta["optimizer_steps"])\n', "")],
         tests=[RESUME]),
    dict(id="resume-restarts-epoch", what="resume forgets the position inside the epoch",
         edits=[("hpcrnn/train.py", 'meta["epoch"], meta["step_in_epoch"]', 'meta["epoch"], 0')], tests=[RESUME]),
    dict(id="adam-no-bias-correction", what="Adam's bias corrections are left out",
         edits=[("hpcrnn/optim.py", "        work /= math.sqrt(1 - b2 ** t)\n", ""),
                ("hpcrnn/optim.py", "work *= lr / (1 - b1 ** t)", "work *= lr")], tests=[OPTIM_REFERENCE]),
    dict(id="adam-second-moment-scale", what="Adam's second moment uses the scale once instead of squared",
         edits=[("hpcrnn/optim.py", "work *= (1 - b2) * scale * scale", "work *= (1 - b2) * scale")],
         tests=[OPTIM_REFERENCE]),
    dict(id="lstm-grad-sign", what="wrong sign of the forget gate's gradient in the LSTM backward kernel",
         edits=[("hpcrnn/kernels/lstm.py", "dg[H + j] = dct * c_prev[j] * f * (one - f)",
                 "dg[H + j] = -dct * c_prev[j] * f * (one - f)")],
         tests=["tests/unit/test_kernels.py::test_gradients_match_finite_differences[lstm-last-mse-1-full]"]),
    dict(id="lstm-gate-order", what="LSTM gates i and f swapped consistently (gradients agree, PyTorch's order not)",
         edits=[("hpcrnn/kernels/lstm.py", "        i = sigmoid(a[j])\n        f = sigmoid(a[H + j])\n",
                 "        i = sigmoid(a[H + j])\n        f = sigmoid(a[j])\n"),
                ("hpcrnn/kernels/lstm.py", "a[j], a[H + j], a[2 * H + j], a[3 * H + j] = i, f, g, o",
                 "a[j], a[H + j], a[2 * H + j], a[3 * H + j] = f, i, g, o"),
                ("hpcrnn/kernels/lstm.py", "i, f, g = a[j], a[H + j], a[2 * H + j]",
                 "f, i, g = a[j], a[H + j], a[2 * H + j]"),
                ("hpcrnn/kernels/lstm.py", "        dg[j] = dct * g * i * (one - i)\n        dg[H + j] =",
                 "        dg[H + j] = dct * g * i * (one - i)\n        dg[j] =")],
         tests=["tests/unit/test_kernels.py::test_outputs_and_loss_match_numpy_reference[lstm-last-float64]"]),
    # issue 13: a run never loses or damages data
    dict(id="prune-unverified", what="pruning counts and deletes files that are not valid checkpoints",
         edits=[("hpcrnn/checkpoint.py", "valid = [path for path in list_checkpoints(directory) if verifies(path)]",
                 "valid = list_checkpoints(directory)")],
         tests=[SAFETY + "test_pruning_among_junk_keeps_valid_checkpoints"]),
    dict(id="no-final-checkpoint", what="the final state is checkpointed only on the schedule",
         edits=[("hpcrnn/train.py", "            self.save_checkpoint(final=True)        # the final model",
                 "            pass        # the final model")],
         tests=[SAFETY + "test_final_state_is_checkpointed_off_schedule"]),
    dict(id="metrics-not-trimmed", what="resume appends to metrics.jsonl after a crash's half line and extra steps",
         edits=[("hpcrnn/run.py", "    run_dir.trim_metrics(trainer.step)", "    pass")],
         tests=[SAFETY + "test_resume_trims_metrics_to_the_checkpoint"]),
    dict(id="predict-path-strings", what="predict compares --out and --data as strings, not as files",
         edits=[("hpcrnn/predict.py", "        return os.path.samefile(a, b)",
                 "        return os.path.abspath(a) == os.path.abspath(b)")],
         tests=[SAFETY + "test_predict_refuses_links_to_the_data_and_the_checkpoint[0]"]),
    dict(id="run-dir-unlocked", what="the run directory lock is never taken",
         edits=[("hpcrnn/rundir.py", "        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "        pass")],
         tests=[SAFETY + "test_run_dir_lock_names_the_holder"]),
    dict(id="checkpoint-failures-ignored", what="a checkpoint that cannot be written is only ever a warning",
         edits=[("hpcrnn/train.py", "        if final or self.failed_checkpoints >= limit:",
                 "        if False:")],
         tests=[SAFETY + "test_unwritable_final_checkpoint_fails_the_run"]),
    dict(id="signal-default-at-exit", what="late signals find the default handler while the process exits",
         edits=[("hpcrnn/cli.py", "            args.stop.ignore_further()", "            args.stop.restore()")],
         tests=[SAFETY + "test_early_and_repeated_signals_exit_75_with_a_checkpoint"]),
    dict(id="row-blocks-drop-grads", what="with C row threads, only block 0's weight gradients are kept",
         edits=[("hpcrnn/model.py", "            for extra in buffers[1:]:\n                grad_out += extra\n", "")],
         tests=["tests/unit/test_rowblocks.py::test_threads_match_one_thread"]),
    dict(id="split-seed-ignored", what="random and stratified splits ignore data.seed",
         edits=[("hpcrnn/data/splits.py", "return np.random.default_rng([SELECT_STREAM, int(seed)])",
                 "return np.random.default_rng([SELECT_STREAM, 0])")],
         tests=["tests/unit/test_splits.py::test_random_split_is_deterministic_disjoint_covering_and_sized"]),
    dict(id="stamp-layout-unchecked", what="a stamp is trusted after the data sets changed shape",
         edits=[("hpcrnn/data/stamp.py", "    if stamp.layout != layout_of(handle):", "    if False:")],
         tests=["tests/unit/test_data_stamp.py::test_a_stamp_whose_layout_changed_is_ignored"]),
    dict(id="epoch-plan-no-skip", what="a resumed epoch starts its batches from the epoch's start again",
         edits=[("hpcrnn/data/loader.py", "        for _ in range(start_step):            # a resumed epoch: the batches done before\n"
                 "            next(self.stream)\n", "")],
         tests=["tests/unit/test_data_loader.py::test_start_step_resumes_mid_epoch"]),
]


def scratch_base():
    tag = hashlib.sha1(ROOT.encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), f"hpcrnn-mutate-{tag}")


def make_copy(base):
    """A fresh copy of the repository at base/repo (mtimes kept, so numba's cache of unchanged kernels stays valid)."""
    repo = os.path.join(base, "repo")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".numba-cache*", ".pytest_cache")
    for name in COPIED:
        source = os.path.join(ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(repo, name), ignore=ignore)
        elif os.path.exists(source):
            shutil.copy2(source, os.path.join(repo, name))
    venv = os.path.join(ROOT, ".venv")
    if os.path.isdir(venv):
        os.symlink(os.path.realpath(venv), os.path.join(repo, ".venv"))
    return repo


def environment(repo, cache):
    env = {k: v for k, v in os.environ.items() if k != "HPCRNN_REQUIRE_EXTRAS"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
               NUMBA_CACHE_DIR=cache, PYTHONDONTWRITEBYTECODE="1")
    return env


def run(command, repo, env, log):
    """Runs `command` in the copy (its whole process group killed after RUN_TIMEOUT_S); returns (code, output)."""
    job = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        out, _ = job.communicate(timeout=RUN_TIMEOUT_S)
        code = job.returncode
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        out, code = job.communicate()[0] + f"\n[mutations.py: killed after {RUN_TIMEOUT_S} s]\n", "timeout"
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(command)}\n{out}\n[exit {code}]\n")
    return code, out


def run_tests(entry, repo, env, log):
    """Runs the entry's serial tests, then its MPI tests (unless already caught); returns (failed, what failed)."""
    pytest = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    runs = []
    if entry.get("tests"):
        runs.append(("serial", pytest + entry["tests"]))
    if entry.get("mpi"):
        ranks = entry.get("ranks", 2)
        runs.append((f"mpi -n {ranks}", [mpiexec(), "-n", str(ranks)] + pytest + entry["mpi"]))
    for kind, command in runs:
        code, out = run(command, repo, env, log)
        if code != 0:
            failed = re.search(r"FAILED (\S+)", out)
            return True, f"{kind}: {failed.group(1) if failed else f'exit {code}'}"
    return False, ", ".join(kind for kind, _ in runs) + " passed"


def apply(entry, repo):
    """Plants the entry's edits; returns None, or why it is STALE."""
    for path, old, new in entry["edits"]:
        target = os.path.join(repo, path)
        text = open(target).read() if os.path.exists(target) else ""
        if text.count(old) != 1:
            return f"{path}: snippet found {text.count(old)} times: {old.strip()[:60]!r}"
        with open(target, "w") as handle:
            handle.write(text.replace(old, new))
    return None


def restore(entry, repo):
    for path in {path for path, _, _ in entry["edits"]}:
        shutil.copy2(os.path.join(ROOT, path), os.path.join(repo, path))


def baseline(entries, repo, env, log):
    """The named tests on the unmodified copy (one serial run, one MPI run per rank count); None when all pass."""
    union = {"tests": [], "mpi": {}}
    for entry in entries:
        union["tests"] += [t for t in entry.get("tests", []) if t not in union["tests"]]
        group = union["mpi"].setdefault(entry.get("ranks", 2), [])
        group += [t for t in entry.get("mpi", []) if t not in group]
    checks = [dict(tests=union["tests"])] + [dict(mpi=tests, ranks=ranks) for ranks, tests in union["mpi"].items()]
    for check in checks:
        failed, detail = run_tests(check, repo, env, log)
        if failed:
            return detail
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--keep-logs", action="store_true", help="print where every log is, not only failures'")
    args = parser.parse_args(argv)
    entries = [m for m in MUTATIONS if not args.only or m["id"] in args.only]
    if args.list or not entries:
        for m in MUTATIONS:
            print(f"{m['id']:26} {m['what']}")
        return 0 if entries else 2
    base = scratch_base()
    os.makedirs(base, exist_ok=True)
    lock = open(os.path.join(base, "lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"mutations.py: another run holds {base}; wait for it", file=sys.stderr)
        return 2
    return mutate_all(entries, base, args.keep_logs)


def mutate_all(entries, base, keep_logs):
    started = time.perf_counter()
    repo, logs = make_copy(base), os.path.join(base, "logs")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    env = environment(repo, os.path.join(base, "numba-cache"))
    where = subprocess.run([sys.executable, "-c", "import hpcrnn; print(hpcrnn.__file__)"], cwd=repo, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(repo + os.sep):
        print(f"mutations.py: the copy imports hpcrnn from {where!r}, not from {repo}", file=sys.stderr)
        return 2
    print(f"scratch copy {repo}; baseline: the named tests on the unmodified copy ...", flush=True)
    problem = baseline(entries, repo, env, os.path.join(logs, "baseline.log"))
    if problem:
        print(f"BASELINE FAILED ({problem}): see {os.path.join(logs, 'baseline.log')}")
        return 1
    print(f"baseline passed ({time.perf_counter() - started:.0f} s)\n")
    print(f"{'mutation':26} {'result':11} {'time':>6}  detail", flush=True)
    missed = 0
    for entry in entries:
        t0, log = time.perf_counter(), os.path.join(logs, f"{entry['id']}.log")
        stale = apply(entry, repo)
        if stale:
            result, detail = "STALE", stale
        else:
            kernels = any(path.startswith("hpcrnn/kernels/") for path, _, _ in entry["edits"])
            # numba's cache does not track calls across files: mutated kernels compile into a throwaway cache
            run_env = {**env, "NUMBA_CACHE_DIR": tempfile.mkdtemp(dir=base)} if kernels else env
            caught, detail = run_tests(entry, repo, run_env, log)
            result = "caught" if caught else "NOT CAUGHT"
            if kernels:
                shutil.rmtree(run_env["NUMBA_CACHE_DIR"], ignore_errors=True)
        restore(entry, repo)
        missed += result != "caught"
        note = f"  [log {log}]" if (result != "caught" or keep_logs) and os.path.exists(log) else ""
        print(f"{entry['id']:26} {result:11} {time.perf_counter() - t0:5.1f}s  {detail}{note}", flush=True)
    print(f"\n{len(entries) - missed}/{len(entries)} caught in {time.perf_counter() - started:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
