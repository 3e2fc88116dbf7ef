"""numba's cache notices an edit of hpcrnn/kernels/common.py by itself: every kernel inlines gemm/tanh/sigmoid
from there, so a kernel cached before the edit must compile again after it (numba alone stamps a kernel with
its own file only). Checked on a copy of common.py with a tiny kernel module beside it."""
import os
import shutil
import subprocess
import sys

import hpcrnn.kernels.common as common

TINY = """
from tk.common import kernel, tanh

@kernel
def squash(x):
    for i in range(x.shape[0]):
        x[i] = tanh(x[i])
"""
RUN = """
import numpy as np
from tk.tiny import squash
squash(np.ones(4, np.float32))
print(sum(squash.stats.cache_hits.values()), sum(squash.stats.cache_misses.values()))
"""


def hits_and_misses(folder):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / "cache"), "PYTHONPATH": str(folder)}
    result = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=folder, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return tuple(int(v) for v in result.stdout.split())


def test_editing_common_py_invalidates_cached_kernels(tmp_path):
    package = tmp_path / "tk"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(common.__file__, package / "common.py")
    (package / "tiny.py").write_text(TINY)
    assert hits_and_misses(tmp_path) == (0, 1)          # compiled and cached
    assert hits_and_misses(tmp_path) == (1, 0)          # loaded from the cache
    with open(package / "common.py", "a") as handle:
        handle.write("\n# an edit of the shared kernel pieces\n")
    assert hits_and_misses(tmp_path) == (0, 1)          # the edit is noticed: compiled again
    assert hits_and_misses(tmp_path) == (1, 0)
