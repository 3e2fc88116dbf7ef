"""Fills a job-script template's `{{name}}` placeholders; a missing or unknown name is a one-line ConfigError.

An `#SBATCH` line whose placeholders all render empty is left out (e.g. no --partition: the cluster default)."""
import os
import re

from hpcrnn.errors import ConfigError

JOBS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "jobs")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAME = re.compile(r"[a-z_][a-z0-9_]*$")
TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")
UNSAFE = ('"', "`", "\n", "\r")

# Values every template may use without --set; a template's other placeholders must be given.
DEFAULTS = {"nodes": "1", "ntasks_per_node": "1", "cpus_per_task": "1", "time": "01:00:00", "partition": "",
            "account": "", "job_name": "hpcrnn", "log": "%x-%j.out", "venv": "", "config": "", "data": "",
            "train_args": "", "sweep_args": ""}
POSITIVE_INTEGERS = ("nodes", "ntasks_per_node", "cpus_per_task")


def find_template(name):
    """A template path from a path or a name in jobs/ (`train`, `train.sbatch`)."""
    candidates = [name, os.path.join(JOBS_DIR, name), os.path.join(JOBS_DIR, name + ".sbatch")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    known = sorted(f[:-len(".sbatch")] for f in os.listdir(JOBS_DIR) if f.endswith(".sbatch")) \
        if os.path.isdir(JOBS_DIR) else []
    raise ConfigError(f"job template not found: {name} (templates in {JOBS_DIR}: {', '.join(known) or 'none'})")


def placeholders(text):
    """Placeholder names in order of first use; a malformed one is an error."""
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in PLACEHOLDER.finditer(line):
            name = match.group(1)
            if not NAME.match(name):
                raise ConfigError(f"line {number}: malformed placeholder {match.group(0)!r} "
                                  "(use {{lower_case_name}})")
            if name not in names:
                names.append(name)
        if "{{" in PLACEHOLDER.sub("", line):   # a lone `}}` is shell (`${a:-${b}}`), a lone `{{` is a typo
            raise ConfigError(f"line {number}: '{{{{' without a closing '}}}}' in {line.strip()!r}")
    return names


def check_value(name, value):
    if any(char in value for char in UNSAFE):
        raise ConfigError(f"{name}: value {value!r} may not contain a double quote, backquote or line break")
    if name in POSITIVE_INTEGERS and not (value.isdigit() and int(value) >= 1):
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    if name == "time" and not TIME.match(value):
        raise ConfigError(f"time: expected minutes, [D-]HH:MM:SS or D-HH, got {value!r}")


def render(text, values, template_name="template"):
    """Returns `text` with every placeholder replaced from `values` (merged over DEFAULTS)."""
    used = placeholders(text)
    unknown = sorted(set(values) - set(used))
    if unknown:
        raise ConfigError(f"{template_name}: unknown template variable(s) {', '.join(unknown)} "
                          f"(this template uses: {', '.join(used)})")
    merged = {**DEFAULTS, **{k: str(v) for k, v in values.items()}}
    missing = [name for name in used if name not in merged]
    if missing:
        raise ConfigError(f"{template_name}: no value for {{{{{missing[0]}}}}} "
                          f"(give --set {missing[0]}=VALUE)")
    for name in used:
        check_value(name, merged[name])
    return "".join(render_line(line, merged) for line in text.splitlines(keepends=True))


def render_line(line, values):
    names = [match.group(1) for match in PLACEHOLDER.finditer(line)]
    if names and line.startswith("#SBATCH") and all(values[name] == "" for name in names):
        return ""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], line)


def parse_assignments(items):
    """`KEY=VALUE` strings to a dict; keys may use dashes for underscores."""
    values = {}
    for item in items:
        key, separator, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not separator or not NAME.match(key):
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE with a lower-case name")
        values[key] = value
    return values


def render_file(template, values, output=None):
    """Renders the template (name or path); writes `output` (made executable) when given; returns the text."""
    path = find_template(template)
    with open(path) as handle:
        text = render(handle.read(), values, os.path.basename(path))
    if output:
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        with open(output, "w") as handle:
            handle.write(text)
        os.chmod(output, 0o755)
    return text
