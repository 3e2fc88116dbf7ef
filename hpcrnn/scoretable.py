"""The evaluation as a short table, model against baselines: plain text for the terminal, Markdown for the
run report. Reads the metrics dict of evaluate.run_evaluate; computes nothing."""
from hpcrnn.log import markdown_lines

MAX_HORIZONS = 6         # per-horizon columns shown (the JSON line has them all)
MAX_CONFUSION = 20       # classes up to which the confusion matrix is printed


def table(metrics):
    """(header, rows, notes): the rows of the table as strings, and lines to print under it."""
    if "accuracy" in metrics:
        return _classification(metrics)
    return _regression(metrics)


def _number(value):
    return "-" if value is None else f"{value:.4g}"


def _regression(metrics):
    per_horizon = metrics.get("per_horizon_rmse") or []
    shown = per_horizon[:MAX_HORIZONS]
    header = ["", "RMSE", "MAE"] + [f"RMSE h={h + 1}" for h in range(len(shown))]
    if len(per_horizon) > len(shown):
        header.append("...")
    rows = [["model", _number(metrics["rmse"]), _number(metrics["mae"])] + [_number(v) for v in shown]]
    notes = []
    for name, scores in metrics.get("baselines", {}).items():
        if "unavailable" in scores:
            notes.append(f"{name}: unavailable ({scores['unavailable']})")
            continue
        rows.append([name, _number(scores["rmse"]), _number(scores["mae"])]
                    + [_number(v) for v in scores["per_horizon_rmse"][:MAX_HORIZONS]])
    if metrics.get("skill") is not None:
        notes.append(f"skill = 1 - RMSE_model / RMSE_persistence = {metrics['skill']:.3f}"
                     + ("" if metrics["skill"] > 0 else " (the model does not beat persistence)"))
    return header, rows, notes


def _classification(metrics):
    header = ["", "accuracy", "macro-F1"]
    rows = [["model", _number(metrics["accuracy"]), _number(metrics.get("macro_f1"))]]
    majority = metrics.get("baselines", {}).get("majority_class")
    notes = []
    if majority:
        rows.append([f"majority_class ({majority['class']})", _number(majority["accuracy"]),
                     _number(majority["macro_f1"])])
    if metrics.get("skill") is not None:
        notes.append(f"skill = 1 - error_model / error_majority = {metrics['skill']:.3f}")
    recall = metrics.get("per_class_recall")
    if recall:
        notes.append("recall by class: " + ", ".join(f"{c}: {_number(r)}" for c, r in enumerate(recall)))
    return header, rows, notes


def _confusion(metrics):
    matrix = metrics.get("confusion_matrix")
    if not matrix or len(matrix) > MAX_CONFUSION:
        return None
    header = ["true \\ predicted"] + [str(c) for c in range(len(matrix))]
    return header, [[str(c)] + [str(v) for v in row] for c, row in enumerate(matrix)]


def _aligned(header, rows):
    widths = [max(len(r[i]) if i < len(r) else 0 for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def text_table(metrics):
    """The table, its notes and (few classes) the confusion matrix, as lines of text."""
    header, rows, notes = table(metrics)
    lines = _aligned(header, rows) + notes
    confusion = _confusion(metrics)
    if confusion:
        lines += ["confusion matrix (rows: true class, columns: predicted class):"] + _aligned(*confusion)
    return "\n".join(lines)


def markdown_table(metrics):
    """The same as text_table, in Markdown."""
    header, rows, notes = table(metrics)
    lines = markdown_lines(header, rows) + [""] + [f"- {note}" for note in notes]
    confusion = _confusion(metrics)
    if confusion:
        lines += ["", "Confusion matrix (rows: true class, columns: predicted class):", ""] + markdown_lines(*confusion)
    return "\n".join(lines)
