"""The client is its own small distribution: a CI job on a current Ubuntu or Debian (Python 3.12,
3.13) installs it without torch, Django, MLflow or Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("torch", "django", "mlflow", "ray", "transformers", "celery")


def _run(*command: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _python(version: str) -> str:
    """An interpreter of ``version``: on PATH, or one of pyenv's (whose shims answer only the active one)."""
    candidates = [shutil.which(f"python{version}") or ""]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(root.glob(f"versions/{version}.*/bin/python{version}"))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    pytest.fail(f"no working python{version}: this machine kind has 3.11, 3.12 and 3.13 (pyenv)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("client-wheel")
    # Built from a copy: setuptools writes build/ beside the sources it builds.
    source = shutil.copytree(
        ROOT / "client", out / "client", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source))
    [built] = out.glob("tuneyard_client-*.whl")
    return built


@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_it_resolves_for_the_pythons_of_current_distributions_without_the_server(wheel, tmp_path, python):
    _run(
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", python, "--dest", str(tmp_path), str(wheel),
    )  # fmt: skip
    names = sorted(p.name.lower() for p in tmp_path.iterdir())
    assert any(n.startswith("httpx-") for n in names), names
    assert not [n for n in names if n.startswith(SERVER_ONLY)], names


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_each_python_installs_it_alone_and_its_command_line_reaches_the_server(
    wheel, tmp_path, version, people, live_server
):
    python = _python(version)
    _run(python, "-m", "venv", str(tmp_path / "venv"))
    bin_dir = tmp_path / "venv" / "bin"
    _run(str(bin_dir / "pip"), "install", "--quiet", str(wheel))
    loaded = _run(
        str(bin_dir / "python"), "-c",
        "import sys, tuneyard, tuneyard_cli.main; print(sys.version_info[:2], sorted(sys.modules))",
        cwd=tmp_path,
    )  # fmt: skip
    assert loaded.startswith(f"({version.replace('.', ', ')})")
    assert not [m for m in SERVER_ONLY if f"'{m}'" in loaded], loaded
    env = {"PATH": str(bin_dir), "TUNEYARD_URL": live_server.url, "TUNEYARD_PASSWORD": PASSWORD}
    token = subprocess.run(
        [str(bin_dir / "tuneyard"), "token", "alice"], env=env, capture_output=True, text=True, timeout=60
    )
    assert token.returncode == 0, token.stderr
    projects = subprocess.run(
        [str(bin_dir / "tuneyard"), "-o", "table", "projects"],
        env=env | {"TUNEYARD_TOKEN": token.stdout.strip()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert projects.returncode == 0 and projects.stdout.split()[:3] == ["SLUG", "NAME", "ROLE"], projects
