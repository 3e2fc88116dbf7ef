"""Argparse set-up and handlers of `hpcrnn sweep {run,status,collect,task}` (docs/sweeps.md)."""
import os
import signal

from hpcrnn.errors import ConfigError

EXIT_CODES = {"done": 0, "stopped": 0, "failed": 1}     # preempted: checkpoint.PREEMPTED_EXIT


def add_sweep_args(parser):
    sub = parser.add_subparsers(dest="sweep_command", required=True)
    run = sub.add_parser("run", help="run a sweep here (K trials at a time) or submit it as a Slurm job array")
    run.add_argument("--spec", required=True, help="sweep spec (TOML): base config, [grid], [random], [sweep]")
    run.add_argument("--out", required=True, help="sweep folder: DIR/trial-NNNN/ per trial; rerun to resume")
    run.add_argument("--launcher", default="local", choices=("local", "slurm"),
                     help="local: run here under mpiexec; slurm: submit jobs/sweep_array.sbatch")
    run.add_argument("--ranks", type=int, default=1, help="MPI ranks of each trial")
    run.add_argument("--parallel", type=int, default=None,
                     help="trials at a time (local default: cores / ranks; slurm default: no limit)")
    run.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE",
                     help="--launcher slurm: job template variables (partition, time, account, venv, ...)")
    run.set_defaults(handler=run_sweep)
    status = sub.add_parser("status", help="state of each trial: pending, running, done, failed, stopped")
    status.add_argument("folder")
    status.set_defaults(handler=run_status)
    collect = sub.add_parser("collect", help="results.csv, results.md, results.png and best.toml of a sweep")
    collect.add_argument("folder")
    collect.set_defaults(handler=run_collect)
    task = sub.add_parser("task", help="run one trial of a prepared sweep folder (what a job-array task runs)")
    task.add_argument("folder")
    task.add_argument("--index", type=int, required=True, help="the trial (the array task index)")
    task.add_argument("--launch-command", default="", help="launcher words before '-n P' (e.g. srun --mpi=pmi2)")
    task.set_defaults(handler=run_task)


def say(text):
    print(text, flush=True)


def run_sweep(args, comm):
    from hpcrnn.scaling.results import cores_available
    from hpcrnn.tuning.runner import SweepLock, describe, launch_prefix, prepare, run_local, submit_array
    from hpcrnn.tuning.spec import load_spec
    if comm.size > 1:
        raise ConfigError("hpcrnn sweep run starts its own MPI runs: start it serially, not under mpiexec")
    if args.ranks < 1:
        raise ConfigError(f"--ranks {args.ranks}: expected a positive number of ranks per trial")
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel}: expected a positive number of trials at a time")
    if args.job_set and args.launcher != "slurm":
        raise ConfigError("--job-set: only with --launcher slurm")
    spec = load_spec(args.spec)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {args.out}: is a file, not a folder")
    os.makedirs(out, exist_ok=True)
    with SweepLock(out):
        sweep = prepare(spec, out, args.ranks)
        say(f"sweep {out}: {len(sweep['trials'])} trials of {args.ranks} rank(s), monitor {spec.monitor}"
            + (f", rungs at epochs {list(spec.rungs)} (reduction factor {spec.reduction_factor:g})"
               if spec.rungs else ", no early stopping"))
        describe(sweep, say)
        if args.launcher == "slurm":
            return submit_array(out, sweep, args.parallel, args.job_set, say)
        parallel = args.parallel or max(1, cores_available() // args.ranks)
        return run_local(out, sweep, parallel, launch_prefix("", args.ranks), say)


def run_status(args, comm):
    from hpcrnn.tuning.collect import format_status
    from hpcrnn.tuning.record import load_sweep
    if comm.rank == 0:
        say(format_status(args.folder, load_sweep(args.folder)))
    return 0


def run_collect(args, comm):
    from hpcrnn.tuning.collect import collect
    if comm.rank == 0:
        written, winner = collect(args.folder)
        for path in written:
            say(f"wrote {path}")
        if winner:
            say(f"best: {winner['trial']} ({winner['value']:.6g} at step {winner['step']})")
    return 0


def run_task(args, comm):
    from hpcrnn.checkpoint import PREEMPTED_EXIT
    from hpcrnn.tuning.record import load_sweep
    from hpcrnn.tuning.runner import SIGNALS, launch_prefix
    from hpcrnn.tuning.task import TrialTask, settings_from
    if comm.size > 1:
        raise ConfigError("hpcrnn sweep task starts its own MPI run: start it serially, not under srun/mpiexec")
    out = os.path.abspath(args.folder)
    settings = settings_from(load_sweep(out))
    if not 0 <= args.index < settings.count:
        raise ConfigError(f"--index {args.index}: the sweep in {out} has trials 0 to {settings.count - 1}")
    task = TrialTask(out, args.index, settings, launch_prefix(args.launch_command, settings.ranks), say)
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: task.forward(signum))
    state = task.run()
    say(f"trial-{args.index:04d}: {state}")
    return EXIT_CODES.get(state, PREEMPTED_EXIT)
