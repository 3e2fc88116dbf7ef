"""`hpcrnn report RUN_DIR`: writes RUN_DIR/report.md, with PNG plots in RUN_DIR/report/, from the run's
metrics.jsonl, summary.json and config.toml, and the evaluation of its best checkpoint against the baselines
(every rank evaluates; rank 0 writes)."""
import json
import os

from hpcrnn import comm as mpi
from hpcrnn.errors import ConfigError, HpcrnnError
from hpcrnn.rundir import RunDir


def run_report(run_dir, comm, data=None, season=None, split="val"):
    """Writes the report; returns the path of report.md (on every rank). data: the file to evaluate on
    (default: the file of the run's `split`: data.val_path for val when set, else data.path); an evaluation that cannot be made is reported with its reason."""
    paths = RunDir(run_dir, writes=comm.rank == 0)
    missing = None if os.path.isfile(paths.metrics) else \
        f"{run_dir}: no metrics.jsonl here (not a run directory, or its run never started)"
    mpi.agree(comm, missing, ConfigError)
    config_text = read_text(paths.config)
    evaluation, why_not = evaluate_run(run_dir, comm, data or data_path(config_text, split), season, split)
    error = None
    if paths.writes:
        try:
            write_report(paths, config_text, evaluation, why_not, split)
        except (OSError, ImportError, ValueError) as exc:
            error = f"{paths.report}: not written ({type(exc).__name__}: {exc})"
    mpi.agree(comm, error, HpcrnnError)
    return paths.report


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def data_path(config_text, split="all"):
    """The file of the run's `split`: data.val_path (test_path) for val (test) when set, else data.path."""
    from hpcrnn.config import from_toml_text
    from hpcrnn.data.splits import other_file
    try:
        data = from_toml_text(config_text).data if config_text else None
        return "" if data is None else other_file(data, split) or data.path
    except (HpcrnnError, ValueError):
        return ""


def evaluate_run(run_dir, comm, data, season, split):
    """(metrics of the best checkpoint on `split`, None) or (None, why not): the same on every rank."""
    from hpcrnn.evaluate import run_evaluate
    if not data:
        return None, "the run's config.toml names no data file (give --data)"
    try:
        return run_evaluate(run_dir, data, comm, split=split, season=season), None
    except HpcrnnError as exc:
        return None, str(exc)


def read_records(path):
    """metrics.jsonl's records; a last line left incomplete by a crash is ignored."""
    records = []
    with open(path) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    return records


def read_summary(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def write_report(paths, config_text, evaluation, why_not, split):
    from hpcrnn.runplots import all_plots
    records = read_records(paths.metrics)
    summary = read_summary(paths.summary)
    best = summary.get("best") or {}
    os.makedirs(paths.report_plots, exist_ok=True)
    plots = all_plots(records, best.get("step"), paths.report_plots, baseline_lines(evaluation, split))
    folder = os.path.basename(paths.report_plots)
    lines = [f"# Run report: {paths.path}", ""] + overview(summary, records) + [""]
    lines += evaluation_section(evaluation, why_not, split)
    for title, name in plots.items():
        lines += [f"## {title}", "", f"![{title}]({folder}/{name})", ""]
    lines += ["## Config", "", "```toml", config_text.rstrip() or "# config.toml not found", "```", ""]
    tmp = f"{paths.report}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write("\n".join(lines))
    os.replace(tmp, paths.report)


def baseline_lines(evaluation, split):
    """{metric: {baseline: value}} of the evaluation on the val split, for the val metric plots."""
    if evaluation is None or split != "val":
        return None
    lines = {}
    for name, scores in evaluation.get("baselines", {}).items():
        for metric in ("rmse", "mae", "accuracy"):
            if metric in scores:
                lines.setdefault(metric, {})[name] = scores[metric]
    return lines


def overview(summary, records):
    """The run at a glance: state, steps, ranks, time by phase, final loss, best checkpoint."""
    if not summary:
        steps = [r for r in records if "event" not in r]
        return [f"No summary.json (the run is still going, or was killed): {len(steps)} steps recorded."]
    best = summary.get("best")
    rows = [("state", f"{summary.get('state', '?')}, stopped early: {'yes' if summary.get('stopped_early') else 'no'}"),
            ("steps / epochs", f"{summary.get('steps')} / {summary.get('epochs')}"),
            ("ranks", str(summary.get("ranks"))),
            ("training time", f"{summary.get('wall_s', 0.0):.1f} s (per step on rank 0: compute "
                              f"{summary.get('total_t_compute', 0.0):.1f} s, communication "
                              f"{summary.get('total_t_comm', 0.0):.1f} s, I/O {summary.get('total_t_io', 0.0):.1f} s)"),
            ("final train loss", f"{summary.get('final_loss', float('nan')):.5g}"),
            ("best", f"{best['metric']} {best['value']:.5g} at step {best['step']} (epoch {best['epoch']})"
             if best else "no evaluation (no validation split)")]
    return ["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]


def evaluation_section(evaluation, why_not, split):
    from hpcrnn.scoretable import markdown_table
    if evaluation is None:
        return [f"## Evaluation on the {split} split", "", f"Not available: {why_not}", ""]
    title = (f"## Evaluation of {os.path.basename(evaluation['checkpoint'])} (step {evaluation['step']}) on the "
             f"{split} split ({evaluation['count']} samples of {evaluation['data']})")
    return [title, "", markdown_table(evaluation), ""]
