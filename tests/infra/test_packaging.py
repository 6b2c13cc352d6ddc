"""Each role installs what it runs and nothing else: the web host no torch, a GPU host no Django.

The package metadata states ranges; constraints.txt holds the exact versions tested together, and
every install (the Makefile's, the Dockerfile's, these tests') goes through it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What each role must never bring: the other role's heavy half.
TRAINING_ONLY = {"torch", "peft", "trl", "accelerate", "ray", "bitsandbytes"}
WEB_ONLY = {"django", "djangorestframework", "drf-spectacular", "gunicorn", "psycopg", "whitenoise"}


def _requirements(extra: str) -> list[Requirement]:
    """The base dependencies and ``extra``'s, this project's own extras left out."""
    lines = PROJECT["dependencies"] + PROJECT["optional-dependencies"][extra]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "tuneyard"]


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("extra", ["web", "worker", "dev"])
def test_the_metadata_states_ranges_and_every_requirement_has_its_tested_version(extra):
    pins = _constraints()
    for requirement in _requirements(extra):
        assert not any(s.operator in ("==", "===") for s in requirement.specifier), (
            f"{requirement}: exact pins belong in constraints.txt"
        )
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} has no tested version in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt's {name}=={pins[name]} is outside pyproject.toml's {requirement}"
        )


def test_the_web_role_names_no_training_library_and_the_worker_role_no_django():
    web = {canonicalize_name(r.name) for r in _requirements("web")}
    worker = {canonicalize_name(r.name) for r in _requirements("worker")}
    assert not web & TRAINING_ONLY
    assert not worker & WEB_ONLY
    assert {"django", "mlflow"} <= web
    assert {"torch", "transformers", "peft", "celery"} <= worker


def test_the_images_and_the_makefile_install_through_the_constraints():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    targets = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S))
    assert "-c constraints.txt -e '.[web]'" in targets["web"]
    assert "-c constraints.txt -e '.[worker]'" in targets["worker"]
    assert "[web]" not in targets["worker"] and "[worker]" not in targets["web"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["gpu-worker"]["build"]["target"] == "worker"
    for name in ("web", "control", "mlflow"):
        assert compose[name]["build"]["target"] == "web", name
    assert "-c constraints.txt -e '.[dev]'" in (ROOT / "Makefile").read_text()


def _install(role: str, venv: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", f".[{role}]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _run(python: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env or None
    )


# Every module of a package imported, so a module-level import of the other role's library fails here.
IMPORT_ALL = """
import importlib, pkgutil, sys
{setup}
package = importlib.import_module({package!r})
for module in pkgutil.walk_packages(package.__path__, {package!r} + "."):
    if ".migrations." not in module.name and not module.name.endswith(("__main__", "tests")):
        importlib.import_module(module.name)
leaked = sorted({{name.split(".")[0] for name in sys.modules}} & set({forbidden!r}))
assert not leaked, leaked
print("imported", {package!r})
"""


def test_each_role_installs_and_runs_without_the_other_roles_libraries(tmp_path):
    # Both at once: most of the time is downloading and unpacking.
    with ThreadPoolExecutor(2) as pool:
        web, worker = pool.map(_install, ("web", "worker"), (tmp_path / "web", tmp_path / "worker"))

    assert _run(web, "import torch").returncode != 0
    setup = "import django; django.setup()"
    done = _run(
        web,
        IMPORT_ALL.format(setup=setup, package="controlplane", forbidden=["torch", "peft", "trl", "ray"]),
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'web.sqlite3'}",
        TUNEYARD_LAPTOP="true",
        PATH="/usr/bin:/bin",
    )
    assert done.returncode == 0, done.stderr[-3000:]

    assert _run(worker, "import django").returncode != 0
    done = _run(worker, IMPORT_ALL.format(setup="", package="workers", forbidden=["django", "controlplane"]))
    assert done.returncode == 0, done.stderr[-3000:]
    # The worker's entry point starts: Celery loads the app and lists its tasks.
    done = subprocess.run(
        [str(worker.parent / "celery"), "-A", "workers.celery_app", "inspect", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
