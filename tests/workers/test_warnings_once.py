"""A job's log carries each library warning once, however often the library repeats it."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import warnings
from workers.engine.__main__ import library_warnings_once

library_warnings_once()
for step in range(50):
    warnings.warn("`tokenizer` is deprecated", FutureWarning)
warnings.warn("`tokenizer` is deprecated", FutureWarning)  # another line, the same warning
warnings.warn("torch_dtype is deprecated", DeprecationWarning)
print("step 50 done")
"""


def test_each_distinct_warning_appears_once_and_the_jobs_own_output_stays():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "warning: FutureWarning: `tokenizer` is deprecated",
        "warning: DeprecationWarning: torch_dtype is deprecated",
        "step 50 done",
    ]
    # stderr's last line is kept for the sentence of a failure (workers.engine.protocol).
    assert done.stderr == ""
