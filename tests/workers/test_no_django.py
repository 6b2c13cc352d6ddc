from __future__ import annotations

import os
import subprocess
import sys

# Makes `import django` and `import torch` fail, as on a GPU host without them.
_BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('django', 'torch', 'transformers'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def test_the_worker_side_runs_without_django_or_torch():
    # The Celery worker parent must need no Django (no database credentials on a GPU
    # host) and no torch (forking after torch initialises OpenMP deadlocks children).
    code = _BLOCKER + (
        "import workers.tasks, workers.runner, workers.spec, workers.tracking\n"
        # A Ray sweep's driver loads torch only inside its trials.
        "import workers.sweep_space, workers.engine.sweep\n"
        "from workers.celery_app import app\n"
        "assert 'tuneyard.run_job' in app.tasks\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
