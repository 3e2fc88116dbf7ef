"""The `synth`, `prepare` and `check` subcommands: argparse flags and runners for hpcrnn/cli.py, plus a
standalone `python -m hpcrnn.data.commands {synth,prepare,check} ...` that prints a one-line error and exits 1
on failure."""
import argparse
import sys

from hpcrnn import comm as mpi
from hpcrnn.errors import HpcrnnError


def add_synth_args(parser):
    parser.add_argument("--kind", required=True, choices=("mackey-glass", "lorenz96", "sines"))
    parser.add_argument("--sequences", type=int, required=True,
                        help="windows form: samples N; series form: segments of --length rows, back to back")
    parser.add_argument("--length", type=int, required=True, help="time steps T per sequence")
    parser.add_argument("--features", type=int, required=True, help="features F per time step")
    parser.add_argument("--out", required=True, help="output HDF5 file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=1,
                        help="regression target: the next K values of feature 0 after each sequence")
    parser.add_argument("--classes", type=int, default=0, help="sines only: C classes by frequency (/labels)")
    parser.add_argument("--form", choices=("windows", "series"), default="windows")
    parser.add_argument("--lookback", type=int, default=0, help="series form: window length (0 = min(32, T/2))")
    return parser


def run_synth(args, comm):
    """Writes the synthetic file; returns a one-line summary (the caller prints it on rank 0)."""
    from hpcrnn.data.synth import SynthSpec, write
    spec = SynthSpec(kind=args.kind, sequences=args.sequences, length=args.length, features=args.features,
                     out=args.out, seed=args.seed, horizon=args.horizon, classes=args.classes, form=args.form,
                     lookback=args.lookback)
    path = write(spec, comm)
    return f"wrote {path}: {spec.kind}, {spec.form} form, {spec.sequences} x {spec.length} x {spec.features}"


def _names(text):
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else ()


def add_prepare_args(parser):
    parser.add_argument("--input", required=True, help="a .csv (header line), .npy or .npz file")
    parser.add_argument("--out", required=True, help="output HDF5 file")
    parser.add_argument("--lookback", type=int, default=32, help="series form: window length L")
    parser.add_argument("--horizon", type=int, default=1, help="series form: rows predicted K")
    parser.add_argument("--stride", type=int, default=1, help="series form: rows between window starts")
    parser.add_argument("--target-columns", default="", help="series form: comma-separated names or indices "
                        "(default: the first column)")
    parser.add_argument("--columns", default="", help="CSV: comma-separated names or indices to keep")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--gap", type=int, default=-1, help="samples left out before val and test "
                        "(-1: series form ceil((L+K)/stride)-1, so no val window shares a row with train)")
    parser.add_argument("--no-normalize", action="store_true", help="keep the raw values (no /stats)")
    parser.add_argument("--drop-nonfinite", action="store_true",
                        help="leave out the rows (series: the rows before and after join up) or samples that hold "
                        "NaN/Inf or a value beyond float32; without it such a value is an error")
    return parser


def run_prepare(args, comm):
    """Converts the input; returns a one-line summary (the caller prints it on rank 0)."""
    from hpcrnn.data.prepare import PrepareSpec, prepare
    from hpcrnn.data.schema import describe
    spec = PrepareSpec(input=args.input, out=args.out, lookback=args.lookback, horizon=args.horizon,
                       stride=args.stride, target_columns=_names(args.target_columns), columns=_names(args.columns),
                       val_fraction=args.val_fraction, test_fraction=args.test_fraction, gap=args.gap,
                       normalize=not args.no_normalize, drop_nonfinite=args.drop_nonfinite)
    path = prepare(spec, comm)
    info = describe(path)
    splits = ", ".join(f"{name} {start}:{stop}" for name, (start, stop) in info.splits.items())
    summary = f"wrote {path}: {info.form} form, {info.num_samples} samples, {splits}"
    if spec.drop_nonfinite:
        import h5py
        with h5py.File(path, "r") as handle:
            dropped = int(handle.attrs["dropped_nonfinite"])
        unit = "row" if info.form == "series" else "sample"
        summary += f"; dropped {dropped} {unit}{'' if dropped == 1 else 's'} holding NaN/Inf"
    return summary


def add_check_args(parser):
    parser.add_argument("file", metavar="FILE", help="a schema v1 data file")
    parser.add_argument("--stamp", action="store_true", help="after a clean scan, record in the file that its "
                        "values were checked, with checksums (train then skips every check of the values)")
    parser.add_argument("--force", action="store_true", help="with --stamp: stamp even if the values no longer "
                        "match the checksums of the file's stamp (they were changed on purpose)")
    return parser


def run_check(args, comm):
    """Scans (and stamps) the file; returns a one-line summary (the caller prints it on rank 0)."""
    from hpcrnn.data.filecheck import check_file
    return check_file(args.file, comm, write_stamp=args.stamp, force=args.force)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hpcrnn.data.commands")
    commands = parser.add_subparsers(dest="command", required=True)
    add_synth_args(commands.add_parser("synth"))
    add_prepare_args(commands.add_parser("prepare"))
    add_check_args(commands.add_parser("check"))
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    comm = mpi.world()
    try:
        summary = {"synth": run_synth, "prepare": run_prepare, "check": run_check}[args.command](args, comm)
    except HpcrnnError as error:
        if args.debug:
            raise
        sys.stderr.write(f"hpcrnn {args.command}: error: {error}\n")
        return 1
    if comm.rank == 0:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
