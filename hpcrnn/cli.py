"""Thin subcommands: `hpcrnn synth|prepare|check|train|evaluate|predict|report|scaling|jobs|info`, serial or under MPI."""
import argparse
import sys

TRAIN_FLAGS = {  # flag -> (config key, type)
    "data": ("data.path", str), "cell": ("model.cell", str), "hidden": ("model.hidden_size", int),
    "layers": ("model.num_layers", int), "epochs": ("train.epochs", int), "batch_size": ("train.batch_size", int),
    "lr": ("optim.lr", float), "optimizer": ("optim.name", str), "seed": ("train.seed", int),
    "run_dir": ("run_dir", str), "resume": ("checkpoint.resume", str), "dtype": ("model.dtype", str),
    "max_steps": ("train.max_steps", int),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="hpcrnn", description=__doc__.split(":")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    from hpcrnn.data.commands import add_check_args, add_prepare_args, add_synth_args
    add_synth_args(sub.add_parser("synth", help="write a synthetic dataset (in parallel under MPI)"))
    add_prepare_args(sub.add_parser("prepare", help="convert CSV/.npy/.npz to the hpcrnn HDF5 schema"))
    add_check_args(sub.add_parser("check", help="scan a data file's values in parallel (and --stamp it)"))
    train = sub.add_parser("train", help="train a model (serial, mpiexec or srun)")
    train.add_argument("--config", help="TOML config file")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    for flag, (key, typ) in TRAIN_FLAGS.items():
        train.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, help=f"sets {key}")
    ev = sub.add_parser("evaluate", help="metrics of a checkpoint on a dataset, against baselines")
    add_checkpoint_args(ev)
    ev.add_argument("--split", default="all", choices=("all", "train", "val", "test"))
    ev.add_argument("--season", type=int, help="season length in steps: adds the seasonal_naive baseline")
    pr = sub.add_parser("predict", help="write a checkpoint's predictions on a dataset to HDF5")
    add_checkpoint_args(pr)
    pr.add_argument("--out", required=True)
    rp = sub.add_parser("report", help="RUN_DIR/report.md with plots of a run and its evaluation")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--data", help="data file to evaluate on (default: the run's data.path)")
    rp.add_argument("--season", type=int, help="season length in steps: adds the seasonal_naive baseline")
    sub.add_parser("info", help="versions, MPI and HDF5 capabilities, CPU")
    add_study_commands(sub)
    return parser


def add_checkpoint_args(parser):
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    parser.add_argument("--which", choices=("best", "last"),
                        help="of a run directory: best (checkpoints/best.h5 when there is one; the default) "
                             "or last (the newest checkpoint)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=256)


def add_study_commands(sub):
    from hpcrnn.scaling.commands import add_jobs_args, add_scaling_args
    add_scaling_args(sub.add_parser("scaling", help="strong/weak scaling sweeps and reports"))
    add_jobs_args(sub.add_parser("jobs", help="render Slurm job scripts"))
    from hpcrnn.tuning.commands import add_sweep_args
    add_sweep_args(sub.add_parser("sweep", help="hyperparameter sweeps: local or Slurm job arrays, ASHA rungs"))


def train_config(args):
    from hpcrnn.config import load_config
    flags = {key: getattr(args, flag) for flag, (key, _) in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    config = load_config(args.config, args.set, flags)
    if not config.data.path:
        from hpcrnn.errors import ConfigError
        raise ConfigError("data.path: no dataset given (use --data FILE.h5 or data.path in the config)")
    return config


def cmd_train(args, comm):
    from hpcrnn.checkpoint import PREEMPTED_EXIT, Preempted
    from hpcrnn.process import set_threads
    from hpcrnn.run import train
    config = train_config(args)
    set_threads(config)
    try:
        summary = train(config, comm, stop=args.stop)
    except Preempted as stop:
        if comm.rank == 0:
            print(f"hpcrnn: {stop}; exit {PREEMPTED_EXIT} (requeue to resume with --resume auto)", flush=True)
        return PREEMPTED_EXIT
    if comm.rank == 0:
        best = summary.get("best")
        print(f"done: {summary['steps']} steps{' (stopped early)' if summary.get('stopped_early') else ''}, "
              f"final loss {summary['final_loss']:.6g}, {summary['wall_s']:.1f} s"
              + (f"; best {best['metric']} {best['value']:.6g} at step {best['step']}" if best else "")
              + f"; run directory {config.run_dir}", flush=True)
    return 0


def cmd_evaluate(args, comm):
    from hpcrnn.evaluate import format_metrics, run_evaluate
    metrics = run_evaluate(args.checkpoint, args.data, comm, args.split, args.batch_size, args.which, args.season)
    if comm.rank == 0:
        print(format_metrics(metrics), flush=True)
    return 0


def cmd_predict(args, comm):
    from hpcrnn.predict import run_predict
    rows = run_predict(args.checkpoint, args.data, args.out, comm, args.batch_size, args.which)
    if comm.rank == 0:
        print(f"wrote {rows} predictions to {args.out}", flush=True)
    return 0


def cmd_report(args, comm):
    from hpcrnn.report import run_report
    path = run_report(args.run_dir, comm, data=args.data, season=args.season)
    if comm.rank == 0:
        print(f"report: {path}", flush=True)
    return 0


def cmd_info(args, comm):
    from hpcrnn.runinfo import blas_warning, format_report, report
    if comm.rank == 0:
        print(format_report({**report(), "mpi_ranks": comm.size}), flush=True)
        warning = blas_warning()
        if warning:
            print(warning, flush=True)
    return 0


def dispatch(args, comm):
    if args.command in ("synth", "prepare", "check"):
        from hpcrnn.data import commands
        summary = getattr(commands, f"run_{args.command}")(args, comm)
        if comm.rank == 0:
            print(summary, flush=True)
        return 0
    if args.command in ("scaling", "jobs", "sweep"):
        return args.handler(args, comm) or 0
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "report": cmd_report,
                "info": cmd_info}
    return commands[args.command](args, comm)


def main(argv=None):
    from hpcrnn.process import setup_process
    setup_process()                       # before anything loads numpy
    args = build_parser().parse_args(argv)
    if args.command == "train":           # from the start: a signal never finds the default handler
        from hpcrnn.process import StopSignal
        args.stop = StopSignal().install()
    from hpcrnn.comm import world
    try:
        return run_command(args, world())
    finally:
        if getattr(args, "stop", None):
            args.stop.ignore_further()    # the exit code is decided: a late signal must not change it


def run_command(args, comm):
    """Runs the subcommand; returns its exit code. Errors raised together on every rank end with one line and
    exit 2; an unexpected exception on one rank ends the whole job (never leaves ranks in a collective)."""
    from hpcrnn.errors import HpcrnnError
    try:
        return dispatch(args, comm)
    except HpcrnnError as exc:
        if args.debug:
            raise
        if comm.rank == 0:
            print(f"hpcrnn: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            import traceback
            traceback.print_exc()
        from hpcrnn.comm import abort
        abort(comm, f"hpcrnn: error on rank {comm.rank}: {type(exc).__name__}: {exc}"
                    + ("" if args.debug else " (run with --debug for a traceback)"), code=1)


if __name__ == "__main__":
    sys.exit(main())
