"""Argparse set-up and handlers of `hpcrnn scaling {run,report,allreduce}` and `hpcrnn jobs render`."""
import math
import os
import shlex
import subprocess

from hpcrnn.errors import ConfigError

SLURM_FLAGS = ("nodes", "ntasks_per_node", "cpus_per_task", "time", "partition", "account")


def add_jobs_args(parser):
    sub = parser.add_subparsers(dest="jobs_command", required=True)
    render = sub.add_parser("render", help="fill a job template (jobs/*.sbatch) with resources and paths")
    render.add_argument("template", help="a name in jobs/ (train, strong_scaling, weak_scaling) or a path")
    for flag in SLURM_FLAGS:
        render.add_argument("--" + flag.replace("_", "-"), dest=flag, help=f"sets {{{{{flag}}}}}")
    render.add_argument("--output", help="write the script here (default: print it)")
    render.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another template variable, e.g. run_dir=runs/a, data=x.h5, config=c.toml, venv=DIR")
    render.set_defaults(handler=run_render)


def run_render(args, comm):
    from hpcrnn.scaling.render import parse_assignments, render_file
    values = {flag: getattr(args, flag) for flag in SLURM_FLAGS if getattr(args, flag) is not None}
    values.update(parse_assignments(args.set))
    text = render_file(args.template, values, args.output)
    if comm.rank == 0:
        print(f"wrote {args.output}" if args.output else text, end="\n" if args.output else "", flush=True)
    return 0


def add_scaling_args(parser):
    sub = parser.add_subparsers(dest="scaling_command", required=True)
    run = sub.add_parser("run", help="run a strong or weak scaling sweep (mpiexec here, or a Slurm job)")
    run.add_argument("--mode", required=True, choices=("strong", "weak"))
    run.add_argument("--ranks", required=True, help="rank counts, e.g. 1,2,4")
    run.add_argument("--out", required=True, help="sweep folder (one run directory + result.json per rank count)")
    run.add_argument("--steps", type=int, default=40, help="training steps per run")
    run.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians")
    run.add_argument("--batch-size", type=int, default=64, help="global batch (strong) or per-rank batch (weak)")
    run.add_argument("--data", default="", help="a dataset for every run (default: synthetic, sized per run)")
    run.add_argument("--kind", default="sines", choices=("mackey-glass", "lorenz96", "sines"))
    run.add_argument("--length", type=int, default=50, help="synthetic sequence length T")
    run.add_argument("--features", type=int, default=8, help="synthetic features F")
    run.add_argument("--cell", default="lstm")
    run.add_argument("--hidden", type=int, default=64)
    run.add_argument("--layers", type=int, default=1)
    run.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads per rank")
    run.add_argument("--train-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="passed to every `hpcrnn train` as --set (e.g. train.comm_timeout_s=0)")
    run.add_argument("--launcher", default="mpiexec", choices=("mpiexec", "slurm"),
                     help="mpiexec: run here; slurm: submit jobs/{mode}_scaling.sbatch")
    run.add_argument("--launch-command", default="", help="launcher words before '-n P' (e.g. inside a job: srun ...)")
    run.add_argument("--oversubscribe-ok", action="store_true", help="allow ranks x threads above the cores")
    run.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE",
                     help="--launcher slurm: job template variables (partition, time, account, venv, ...)")
    run.set_defaults(handler=run_scaling)
    report = sub.add_parser("report", help="Markdown report with plots and a projection from a sweep folder")
    report.add_argument("folder")
    report.add_argument("--out", required=True, help="report file (.md); plots are written beside it")
    report.add_argument("--alpha", type=float, help="project with this Allreduce latency (s) instead of the fit")
    report.add_argument("--beta", type=float, help="project with this Allreduce cost per byte (s/B) instead of the fit")
    report.set_defaults(handler=run_report)
    allreduce = sub.add_parser("allreduce", help="time Allreduce at this rank count (run under mpiexec/srun)")
    allreduce.add_argument("--out", required=True)
    allreduce.add_argument("--sizes", default="", help="message sizes in bytes, comma-separated")
    allreduce.set_defaults(handler=run_allreduce)


def run_allreduce(args, comm):
    from hpcrnn.scaling.allreduce import run_allreduce as measure_and_write
    return measure_and_write(args, comm)


def parse_ranks(text):
    try:
        ranks = [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise ConfigError(f"--ranks {text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not ranks or min(ranks) < 1:
        raise ConfigError(f"--ranks {text!r}: expected positive rank counts")
    return sorted(set(ranks))


def settings_from(args):
    from hpcrnn.scaling.sweep import Settings
    return Settings(mode=args.mode, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                    data=os.path.abspath(args.data) if args.data else "", kind=args.kind, length=args.length,
                    features=args.features, cell=args.cell, hidden=args.hidden, layers=args.layers,
                    threads=args.threads, train_set=tuple(args.train_set))


def run_scaling(args, comm):
    from hpcrnn.placement import with_binding
    from hpcrnn.scaling.sweep import launcher_prefix, run_sweep
    if comm.size > 1:
        raise ConfigError("hpcrnn scaling run starts its own MPI runs: start it serially, not under mpiexec")
    ranks = parse_ranks(args.ranks)
    settings = settings_from(args)
    if args.launcher == "slurm" and not args.launch_command:
        return submit_sweep(args, settings, ranks)
    prefix = with_binding(launcher_prefix(args.launcher, args.launch_command), settings.threads)
    return run_sweep(settings, ranks, os.path.abspath(args.out), prefix, args.oversubscribe_ok)


def sweep_arguments(settings, oversubscribe_ok):
    """The settings as `hpcrnn scaling run` flags, for the job script's {{sweep_args}}."""
    flags = ["--steps", settings.steps, "--warmup", settings.warmup, "--batch-size", settings.batch_size,
             "--kind", settings.kind, "--length", settings.length, "--features", settings.features,
             "--cell", settings.cell, "--hidden", settings.hidden, "--layers", settings.layers,
             "--threads", settings.threads]
    flags += ["--data", settings.data] if settings.data else []
    flags += [word for item in settings.train_set for word in ("--train-set", item)]
    flags += ["--oversubscribe-ok"] if oversubscribe_ok else []
    return shlex.join(str(flag) for flag in flags)


def submit_sweep(args, settings, ranks):
    """Renders jobs/{mode}_scaling.sbatch into the sweep folder and submits it; prints the job id."""
    from hpcrnn.scaling.render import parse_assignments, render_file
    out = os.path.abspath(args.out)
    values = parse_assignments(args.job_set)
    per_node = int(values.setdefault("ntasks_per_node", str(max(ranks))))
    values.setdefault("nodes", str(math.ceil(max(ranks) / per_node)))
    values.setdefault("cpus_per_task", str(settings.threads))
    values.setdefault("log", os.path.join(out, "slurm-%j.out"))
    values.update({"ranks": ",".join(map(str, ranks)), "out": out,
                   "sweep_args": sweep_arguments(settings, args.oversubscribe_ok)})
    os.makedirs(out, exist_ok=True)
    script = os.path.join(out, f"{settings.mode}_scaling.sbatch")
    render_file(f"{settings.mode}_scaling", values, script)
    result = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True, cwd=out)
    if result.returncode != 0:
        raise ConfigError(f"sbatch {script} failed: {result.stderr.strip() or result.stdout.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    print(f"submitted job {job_id} ({script}); when it ends: hpcrnn scaling report {out} --out {out}/report.md",
          flush=True)
    return 0


def run_report(args, comm):
    from hpcrnn.scaling.report import write_report
    if comm.rank == 0:
        path = write_report(args.folder, args.out, alpha=args.alpha, beta=args.beta)
        print(f"wrote {path}", flush=True)
    return 0
