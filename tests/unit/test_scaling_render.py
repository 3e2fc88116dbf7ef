"""Job-script rendering: placeholders filled, empty #SBATCH lines dropped, one-line errors for missing, unknown,
malformed and unsafe values, and the shipped templates' required contents."""
import os

import pytest

from hpcrnn.errors import ConfigError
from hpcrnn.scaling.render import JOBS_DIR, find_template, parse_assignments, placeholders, render, render_file

TEMPLATE = """#!/bin/bash
#SBATCH --nodes={{nodes}}
#SBATCH --partition={{ partition }}
echo "{{run_dir}}" ${A:-${B}}
"""


def test_fills_placeholders_and_drops_empty_directives():
    text = render(TEMPLATE, {"nodes": 3, "run_dir": "runs/a"})
    assert "#SBATCH --nodes=3\n" in text
    assert "--partition" not in text                     # default "" -> the directive is left out
    assert 'echo "runs/a" ${A:-${B}}' in text             # shell braces are not placeholders
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
                                                  ("time", "1:xx", "time"), ("run_dir", 'a"b', "double quote"),
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
    with pytest.raises(ConfigError, match="strong_scaling, train, weak_scaling"):
        find_template("nope")


@pytest.mark.parametrize("name", ["train", "strong_scaling", "weak_scaling"])
def test_shipped_templates_render_with_required_parts(tmp_path, name):
    values = {"run_dir": "runs/a"} if name == "train" else {"out": "/sweeps/a", "ranks": "1,2"}
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
        assert "--resume auto" in text and '--run-dir "runs/a"' in text
