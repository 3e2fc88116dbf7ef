"""Fills a job-script template's `{{name}}` placeholders with literal values that can neither run as shell code
nor add `#SBATCH` options (docs/slurm.md); a missing, unknown or unsafe value is a one-line ConfigError."""
import os
import re
import shlex

from hpcrnn.errors import ConfigError

JOBS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "jobs")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
NAME = re.compile(r"[a-z_][a-z0-9_]*$")
TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SBATCH_OPTION = re.compile(r"#SBATCH\s+(-[^=\s]*)")
SBATCH_UNSAFE = re.compile(r"[\s\"'\\#]")     # sbatch would end the option there or read a quote or comment
SHELL_SYNTAX = re.compile(r"[;&|<>()$`]")      # refused in a *_args word: it would be passed literally
QUOTES = ("'", '"', "`")

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


def placeholder_contexts(text, template_name="template"):
    """Per line, the context of each placeholder: "sbatch", "comment" or "code". A placeholder inside quotes
    or backquotes is an error: its value is quoted by the renderer."""
    stack, result = [], []      # the shell's open quotes and `(` (a small lexer, carried across lines)
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        starts = {match.start(): match for match in PLACEHOLDER.finditer(line)}
        if not stack and line.startswith("#SBATCH"):
            result.append(["sbatch"] * len(starts))
            continue
        contexts, index = [], 0
        while index < len(line):
            if index in starts:
                if any(mark in QUOTES for mark in stack):
                    raise ConfigError(f"{template_name} line {number}: placeholder {starts[index].group(0)} is "
                                      "inside quotes; write it bare (the renderer quotes every value)")
                contexts.append("code")
                index = starts[index].end()
            elif _starts_comment(line, index, stack):
                contexts += ["comment"] * sum(1 for start in starts if start > index)
                break
            else:
                index = _lex(line, index, stack)
        result.append(contexts)
    return result


def _starts_comment(line, index, stack):
    return line[index] == "#" and (not stack or stack[-1] == "(") and (index == 0 or line[index - 1] in " \t;&|()")


def _lex(line, index, stack):
    """Updates the stack of open quotes and parentheses for line[index]; returns the next index."""
    char, top = line[index], stack[-1] if stack else ""
    if top == "'":                          # only a closing quote ends a single-quoted string
        if char == "'":
            stack.pop()
    elif char == "\\":                     # an escaped character
        return index + 2
    elif char == top and char in QUOTES or char == ")" and top == "(":
        stack.pop()
    elif char in QUOTES and not (char == "'" and top == '"'):
        stack.append(char)
    elif char == "(" and (top != '"' or line[index - 1:index] == "$"):
        stack.append(char)
    return index + 1


def check_value(name, value):
    if CONTROL.search(value):
        raise ConfigError(f"{name}: value {value!r} may not contain a line break or other control character")
    if name in POSITIVE_INTEGERS and not (value.isdigit() and int(value) >= 1):
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    if name == "time" and not TIME.match(value):
        raise ConfigError(f"time: expected minutes, [D-]HH:MM:SS or D-HH, got {value!r}")
    if name.endswith("_args"):
        split_words(name, value)


def split_words(name, value):
    """A `*_args` value as a list of words (shell-style quotes group words); shell syntax is refused."""
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise ConfigError(f"{name}: {value!r} is not a list of words ({error})") from None
    for word in words:
        found = SHELL_SYNTAX.search(word)
        if found:
            raise ConfigError(f"{name}: shell syntax {found.group(0)!r} in {value!r} is not allowed (the value is "
                              "split into words that are passed literally: give command-line flags only)")
    return words


def check_sbatch_value(name, value, line):
    option = SBATCH_OPTION.match(line)
    option = option.group(1) if option else "#SBATCH"
    if SBATCH_UNSAFE.search(value):
        raise ConfigError(f"{name}: {value!r} cannot go into '#SBATCH {option}': it must be one word without "
                          "spaces, quotes, '#' or backslashes (sbatch would read the rest as more options)")
    return value


def render(text, values, template_name="template"):
    """Returns `text` with every placeholder replaced from `values` (merged over DEFAULTS).

    Where a placeholder stands decides how its value is written: in shell code as one single-quoted word (a
    `*_args` value as a list of words, each quoted), so nothing is expanded when the job runs; in an `#SBATCH`
    line as is, and it must be one plain word; in a comment as is. An `#SBATCH` line whose placeholders all
    render empty is left out (e.g. no --partition: the cluster default)."""
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
    lines = text.splitlines(keepends=True)
    contexts = placeholder_contexts(text, template_name)
    return "".join(render_line(line, where, merged) for line, where in zip(lines, contexts))


def render_line(line, contexts, values):
    names = [match.group(1) for match in PLACEHOLDER.finditer(line)]
    if names and line.startswith("#SBATCH") and all(values[name] == "" for name in names):
        return ""
    where = iter(contexts)
    return PLACEHOLDER.sub(lambda match: format_value(match.group(1), values[match.group(1)], next(where), line),
                           line)


def format_value(name, value, context, line):
    """The text that stands for the value: checked in an #SBATCH line, quoted in shell code."""
    if context == "sbatch":
        return check_sbatch_value(name, value, line)
    if context == "comment":
        return value
    return shlex.join(split_words(name, value)) if name.endswith("_args") else shlex.quote(value)


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
