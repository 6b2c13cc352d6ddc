"""A config file the CLI reads is plain data, bounded: a hostile one is one sentence and exit 2.

The CLI runs as a process, as in a pipeline, with its memory capped so that a
file that expands cannot take the machine down with it. No server is needed:
the file is read before anything is sent (``127.0.0.1:9`` answers nothing).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tuneyard_cli.config_file import config_file_read

ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP = 1024**3


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _submit(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneyard_cli", "--url", "http://127.0.0.1:9", "--token", "t"]
        + [
            "submit",
            "--project",
            "demo",
            "--base-model",
            "1",
            "--dataset-version",
            "1",
            "--config",
            str(config),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_capped,
    )


def _refused(result: subprocess.CompletedProcess[str], config: Path) -> str:
    """The one line the CLI said, once the exit code and the line's shape are checked."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tuneyard: {config}") and lines[0].endswith("."), lines
    return lines[0]


def _billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_is_refused_at_its_first_anchor(tmp_path):
    config = tmp_path / "laughs.yaml"
    config.write_text(_billion_laughs())
    assert "anchors and aliases (&, *) are not allowed (line 1, column 4)" in _refused(
        _submit(config), config
    )


def test_a_python_object_tag_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "apply.yaml"
    config.write_text(f'method: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert "tags (tag:yaml.org,2002:python/object/apply:os.system) are not allowed" in _refused(
        _submit(config), config
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("custom-tag.yaml", b"method: !lora {r: 4}\n", "tags (!lora) are not allowed"),
        ("alias.yaml", b"base: &base {r: 4}\nmethod: *base\n", "anchors and aliases"),
        ("deep.yaml", b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64 levels"),
        ("deep-block.yml", "".join(f"{' ' * i}k:\n" for i in range(1000)).encode(), "deeper than 64"),
        ("broken.yaml", b"method: {name: lora\nr: [1, 2\n", "line 2, column 2"),
        ("two.yaml", b"method: lora\n---\nmethod: ia3\n", "expected a single document"),
        ("nul.yaml", b"method: lo\x00ra\n", "unacceptable character #x0000"),
        ("latin1.yaml", b"name: caf\xe9\n", "is not UTF-8 text"),
        ("huge.yaml", b"name: " + b"x" * (2 * 1024 * 1024) + b"\n", "larger than 1024 KiB"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
        ("broken.json", b'{"method": ', "is not valid JSON"),
    ],
)
def test_a_bad_config_file_is_one_sentence_and_exit_2(tmp_path, name, content, says):
    config = tmp_path / name
    config.write_bytes(content)
    assert says in _refused(_submit(config), config)


def test_a_plain_config_is_read_as_data_and_dates_stay_text(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "# a comment\n"
        "method: {name: lora, r: 4}\n"
        "hyperparameters:\n  learning_rate: 2.0e-4\n  max_steps: 6\n"
        "name: run of 2024-05-01\n"
        "started: 2024-05-01\n"
        "tags: [a, 'b', null, true]\n"
    )
    assert config_file_read(str(config)) == {
        "method": {"name": "lora", "r": 4},
        "hyperparameters": {"learning_rate": 2.0e-4, "max_steps": 6},
        "name": "run of 2024-05-01",
        "started": "2024-05-01",
        "tags": ["a", "b", None, True],
    }
    # A date used to reach the request as a datetime.date, which JSON cannot carry (a traceback).
    sent = _submit(config)
    assert sent.returncode == 3 and "cannot reach" in sent.stderr, sent.stderr[-2000:]
