"""Job-script rendering: placeholders filled, empty #SBATCH lines dropped, one-line errors for missing, unknown,
malformed and unsafe values, the shipped templates' required contents, and rendered scripts run by bash against
a stub `srun` (values arrive as literal single words, nothing runs, signals still reach the step)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from hpcrnn.errors import ConfigError
from hpcrnn.scaling.render import JOBS_DIR, find_template, parse_assignments, placeholders, render, render_file

TEMPLATE = """#!/bin/bash
#SBATCH --nodes={{nodes}}
#SBATCH --partition={{ partition }}
echo {{run_dir}} ${A:-${B}}
"""


def test_fills_placeholders_and_drops_empty_directives():
    text = render(TEMPLATE, {"nodes": 3, "run_dir": "runs/a"})
    assert "#SBATCH --nodes=3\n" in text
    assert "--partition" not in text                     # default "" -> the directive is left out
    assert "echo runs/a ${A:-${B}}" in text               # shell braces are not placeholders
    assert "#SBATCH --partition=gpu\n" in render(TEMPLATE, {"run_dir": "x", "partition": "gpu"})


def test_missing_value_names_the_placeholder():
    with pytest.raises(ConfigError, match=r"no value for \{\{run_dir\}\}.*--set run_dir=VALUE"):
        render(TEMPLATE, {})


def test_unknown_variable_is_an_error():
    with pytest.raises(ConfigError, match="unknown template variable.*colour"):
        render(TEMPLATE, {"run_dir": "x", "colour": "red"})


@pytest.mark.parametrize("text, message", [("a {{Bad-Name}} b\n", "malformed placeholder"),
                                           ("a {{run_dir b\n", "without a closing")])
def test_malformed_placeholders(text, message):
    with pytest.raises(ConfigError, match=message):
        placeholders(text)


@pytest.mark.parametrize("name, value, message", [("nodes", "0", "positive integer"), ("nodes", "two", "positive"),
                                                  ("time", "1:xx", "time"), ("run_dir", "a\x07b", "control character"),
                                                  ("run_dir", "a\nb", "line break")])
def test_bad_values(name, value, message):
    values = {"run_dir": "x", name: value}
    with pytest.raises(ConfigError, match=message):
        render(TEMPLATE + "#SBATCH --time={{time}}\n", values)


@pytest.mark.parametrize("value", ["30", "1:00:00", "2-00", "2-12:30:00", "45:00"])
def test_slurm_time_formats_accepted(value):
    assert f"--time={value}\n" in render("#SBATCH --time={{time}}\n", {"time": value})


def test_assignments():
    assert parse_assignments(["run-dir=a=b", "venv="]) == {"run_dir": "a=b", "venv": ""}
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_assignments(["novalue"])


def test_find_template_by_name_and_unknown_name():
    assert find_template("train") == os.path.join(JOBS_DIR, "train.sbatch")
    with pytest.raises(ConfigError, match="strong_scaling, sweep_array, train, weak_scaling"):
        find_template("nope")


@pytest.mark.parametrize("name", ["train", "strong_scaling", "weak_scaling", "sweep_array"])
def test_shipped_templates_render_with_required_parts(tmp_path, name):
    values = {"run_dir": "runs/a"} if name == "train" else {"out": "/sweeps/a", "ranks": "1,2"}
    values = {"out": "/sweeps/a", "array": "0-7%2"} if name == "sweep_array" else values
    output = tmp_path / "job.sh"
    text = render_file(name, {**values, "ntasks_per_node": "4", "cpus_per_task": "2"}, str(output))
    assert os.access(output, os.X_OK) and output.read_text() == text
    assert "{{" not in text
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            assert text.splitlines()[text.splitlines().index(line) - 1].startswith("#"), f"uncommented: {line}"
    for required in ("#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=2", "#SBATCH --requeue",
                     "#SBATCH --open-mode=append", "#SBATCH --signal=B:USR1@120",
                     "srun --mpi=${HPCRNN_SRUN_MPI:-pmi2} -K1", "export SRUN_CPUS_PER_TASK=",
                     "NUMBA_NUM_THREADS=$threads", "OMP_NUM_THREADS=$threads", "OPENBLAS_NUM_THREADS=$threads",
                     "MKL_NUM_THREADS=$threads", "numba-$(uname -m)-", "HPCRNN_ACTIVATE", "HPCRNN_VENV",
                     "trap 'forward USR1' USR1", "trap 'forward TERM' TERM", "PREEMPTED_EXIT=75",
                     'scontrol requeue "$SLURM_JOB_ID"', 'wait "$step_pid"'):
        assert required in text, required
    if name == "train":
        assert "--resume auto" in text and "\nrun_dir=runs/a\n" in text and '--run-dir="$run_dir"' in text


STUB = r"""#!/bin/bash
# A stand-in for srun (or python): records its argv, NUL-separated, then runs until USR1/TERM (exit 75) or 10 s.
trap 'echo USR1 >> "$RECORD.signals"; exit 75' USR1
trap 'echo TERM >> "$RECORD.signals"; exit 75' TERM
printf '%s\0' "$(basename "$0")" "$@" > "$RECORD"
touch "$RECORD.started"
for _ in $(seq 100); do sleep 0.1; done
"""
ATTACKS = {   # values that ran commands or broke the quoting when values were pasted inside double quotes
    "substitution": {"run_dir": "$(touch X)"},
    "escaped quote": {"config": "c\\", "data": "; touch X ; #"},
    "quotes and globs": {"run_dir": "it's \"odd\" `touch X` * ~ $HOME !x \\", "data": "'; touch X; '",
                         "config": "a b\\\" ; touch X"},
}


def run_under_stub(tmp_path, script, extra_env=None, srun=STUB, preempt=True):
    """Runs the script with bash in tmp_path/work, stub srun (text `srun`), python and scontrol on PATH; once
    srun runs, sends USR1 to the batch shell (if it is still running and `preempt`). Returns (exit code, stub argv, signals
    the stub got, scontrol argv, output)."""
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir(exist_ok=True)
    for name, text in (("srun", srun), ("stub-python", STUB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "scontrol").write_text('#!/bin/bash\nprintf "%s " "$@" > "$RECORD.scontrol"\n')
    (bin_dir / "scontrol").chmod(0o755)
    record = tmp_path / "argv"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record), "HOME": str(tmp_path),
           "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "SLURM_JOB_ID": "42", **(extra_env or {})}
    shell = subprocess.Popen(["bash", str(script)], cwd=work, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"{record}.started") and shell.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if preempt and shell.poll() is None:
        shell.send_signal(signal.SIGUSR1)
    try:
        output = shell.communicate(timeout=5)[0]
    except subprocess.TimeoutExpired:        # the step ran in the foreground: the shell could not forward USR1
        shell.kill()
        output = shell.communicate()[0]
    argv = record.read_bytes().decode().split("\0")[:-1] if record.exists() else []
    signals = (tmp_path / "argv.signals").read_text().split() if (tmp_path / "argv.signals").exists() else []
    requeue = (tmp_path / "argv.scontrol").read_text().split() if (tmp_path / "argv.scontrol").exists() else []
    return shell.returncode, argv, signals, requeue, output


def created_files(tmp_path):
    return sorted(str(path) for path in tmp_path.rglob("X"))


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_train_script_passes_values_as_literal_words_and_forwards_signals(tmp_path, attack):
    values = {"run_dir": "runs/a", **ATTACKS[attack],
              "train_args": "--epochs 1 --set 'train.note=a b' --set model.cell=lstm"}
    script = tmp_path / "train.job"
    render_file("train", values, str(script))
    code, argv, signals, requeue, output = run_under_stub(tmp_path, script)
    assert created_files(tmp_path) == [], output
    expected = ["srun", "--mpi=pmi2", "-K1", "--cpu-bind=cores", "python3", "-m", "hpcrnn", "train"]
    expected += [f"--config={values['config']}"] if values.get("config") else []
    expected += [f"--data={values['data']}"] if values.get("data") else []
    expected += [f"--run-dir={values['run_dir']}", "--resume", "auto",
                 "--epochs", "1", "--set", "train.note=a b", "--set", "model.cell=lstm"]
    assert argv == expected, output
    # srun ran in the background under `wait`: the shell forwarded USR1, then requeued on exit 75
    assert signals == ["USR1"] and code == 75 and requeue == ["requeue", "42"], output


@pytest.mark.parametrize("name", ["strong_scaling", "weak_scaling"])
def test_scaling_scripts_pass_values_as_literal_words(tmp_path, name):
    out = "/sweeps/$(touch X)/it's here"
    script = tmp_path / "sweep.job"
    render_file(name, {"ranks": "1,2", "out": out, "sweep_args": "--steps 3 --train-set 'train.note=a b'"},
                str(script))
    python = str(tmp_path / "bin" / "stub-python")
    code, argv, signals, requeue, output = run_under_stub(tmp_path, script, {"HPCRNN_PYTHON": python})
    assert created_files(tmp_path) == [], output
    assert argv == ["stub-python", "-m", "hpcrnn", "scaling", "run", "--mode", name.split("_")[0], "--ranks=1,2",
                    f"--out={out}", "--steps", "3", "--train-set", "train.note=a b", "--launch-command",
                    "srun --mpi=pmi2 -K1 --cpus-per-task=1 --cpu-bind=cores"], output
    assert signals == ["USR1"] and code == 75 and requeue == ["requeue", "42"], output


def test_venv_path_is_literal(tmp_path):
    venv = tmp_path / "my $(touch X) 'venv'"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text('echo "activated $BASH_SOURCE"\n')
    script = tmp_path / "train.job"
    render_file("train", {"run_dir": "r", "venv": str(venv)}, str(script))
    code, argv, _, _, output = run_under_stub(tmp_path, script)
    assert f"activated {venv}/bin/activate" in output and created_files(tmp_path) == []
    assert code == 75 and argv[-3:] == ["--run-dir=r", "--resume", "auto"]


@pytest.mark.parametrize("value", ["--epochs 1; touch X", "--epochs 1 && touch X", "--epochs 1 | tee x",
                                   "--data $(touch X)", "--data `touch X`", "--epochs 1 > log", "--data $HOME/x",
                                   "--epochs 'unbalanced"])
def test_train_args_with_shell_syntax_are_refused(value):
    with pytest.raises(ConfigError) as caught:
        render_file("train", {"run_dir": "r", "train_args": value})
    assert str(caught.value).startswith("train_args: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize("flag, value, option", [("partition", "p --chdir=/", "--partition"),
                                                 ("account", "a b", "--account"),
                                                 ("job_name", "x#y", "--job-name"), ("log", "a'b.out", "--output"),
                                                 ("partition", 'p"', "--partition"), ("account", "a\\b", "--account")])
def test_sbatch_values_must_be_one_plain_word(flag, value, option):
    with pytest.raises(ConfigError) as caught:
        render_file("train", {"run_dir": "r", flag: value})
    message = str(caught.value)
    assert message.startswith(f"{flag}: ") and f"#SBATCH {option}" in message and "\n" not in message


def test_rendered_sbatch_lines_hold_one_option_each(tmp_path):
    text = render_file("train", {"run_dir": "r", "partition": "gpu-a100", "account": "proj_1", "job_name": "a.b-c",
                                 "log": "/scratch/logs/%x-%j.out"})
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            assert len(line.split()) == 2, line


@pytest.mark.parametrize("line", ['echo "{{run_dir}}"\n', "echo 'a {{run_dir}}'\n", "x=$(echo \"{{run_dir}}\")\n",
                                  'echo "a\nb {{run_dir}}"\n', "echo `ls {{run_dir}}`\n"])
def test_placeholder_inside_quotes_is_a_template_error(line):
    with pytest.raises(ConfigError, match="inside quotes; write it bare"):
        render("#!/bin/bash\n" + line, {"run_dir": "x"})


def test_comments_get_the_value_as_is_and_code_gets_it_quoted():
    text = render("# results in {{out}}/a\necho {{out}} \"$x\" # {{out}}\nf $(g {{out}})\n", {"out": "/a b"})
    assert text == "# results in /a b/a\necho '/a b' \"$x\" # /a b\nf $(g '/a b')\n"


SUMMARY_STUB = r"""#!/bin/bash
# srun as MPICH's mpiexec may behave: the ranks record their outcome, the launcher exits 0 anyway.
trap 'mkdir -p runs/a; echo "{\"state\": \"$STATE\"}" > runs/a/summary.json; exit 0' USR1
printf '%s\0' "$(basename "$0")" "$@" > "$RECORD"
touch "$RECORD.started"
for _ in $(seq 100); do sleep 0.1; done
"""


@pytest.mark.parametrize("state, code, requeued", [("preempted", 75, True), ("failed", 1, False),
                                                   ("done", 0, False)])
def test_train_script_reads_the_runs_record(tmp_path, state, code, requeued):
    script = tmp_path / "train.job"
    render_file("train", {"run_dir": "runs/a"}, str(script))
    env = {"STATE": state, "HPCRNN_PYTHON": sys.executable}
    exit_code, _, _, requeue, output = run_under_stub(tmp_path, script, env, srun=SUMMARY_STUB)
    assert exit_code == code, output
    assert (requeue == ["requeue", "42"]) == requeued, output
    assert f"run state {state}" in output


def test_train_script_ignores_a_stale_record(tmp_path):
    script = tmp_path / "train.job"
    render_file("train", {"run_dir": "runs/a"}, str(script))
    (tmp_path / "work" / "runs" / "a").mkdir(parents=True)
    (tmp_path / "work" / "runs" / "a" / "summary.json").write_text('{"state": "preempted"}')
    exit_code, _, _, requeue, output = run_under_stub(tmp_path, script, {"HPCRNN_PYTHON": sys.executable},
                                                      srun='#!/bin/bash\ntouch "$RECORD.started"\nexit 0\n',
                                                      preempt=False)   # no USR1 racing the script's end
    assert exit_code == 0 and requeue == [] and "run state not recorded" in output, output
