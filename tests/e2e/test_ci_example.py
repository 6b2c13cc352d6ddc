"""The CI/CD example of docs/ci/ runs as written against the live server: its pipeline script
trains, evaluates, gates and asks for a promotion; after an approval, its CD step reads the
deployment as environment variables."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controlplane.registry.models import Promotion
from controlplane.site.demo import demo_jsonl
from controlplane.training.models import BaseModel, Job
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "docs" / "ci"


def _cd_command() -> str:
    """The GitHub example's CD step that reads the deployment, with its output kept here."""
    workflow = yaml.safe_load((CI / "github-actions.yml").read_text())
    [step] = [s for s in workflow["jobs"]["deploy"]["steps"] if "tuneyard deployed" in s.get("run", "")]
    gitlab = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    assert any("tuneyard deployed production" in line for line in gitlab["deploy"]["script"])
    assert "sh docs/ci/pipeline.sh" in gitlab["train"]["script"]
    return step["run"].replace('>> "$GITHUB_ENV"', "").strip()


def test_the_example_pipeline_trains_gates_and_requests_and_cd_reads_the_deployment(
    people, live_server, worker, tiny_model_uri, tmp_path
):
    BaseModel.objects.create(project=people["demo"], name="tiny", uri=tiny_model_uri)
    (tmp_path / "data.jsonl").write_bytes(demo_jsonl(24))
    (tmp_path / "lora.yaml").write_text(
        "method: {name: lora, r: 4}\nhyperparameters: {max_steps: 4, max_seq_length: 64}\n"
    )
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEYARD_")} | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TUNEYARD_URL": live_server.url,
        "TUNEYARD_PASSWORD": PASSWORD,
    }

    def shell(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", command], cwd=tmp_path, env=env | extra, capture_output=True, text=True, timeout=600
        )

    token = shell("tuneyard token alice").stdout.strip()
    approver = shell("tuneyard token carol").stdout.strip()
    settings = {
        "TUNEYARD_TOKEN": token,
        "PROJECT": "demo",
        "BASE_MODEL": "tiny",
        "DATA": "data.jsonl",
        "DATASET": "ci-data",
        "CONFIG": "lora.yaml",
        "MODEL_NAME": "ci-lora",
        "GATE_METRIC": "perplexity",
        "GATE_MAX": "1e9",
        "RUN_NAME": "commit 1a2b3c",
    }
    run = shell(f"sh {shlex.quote(str(CI / 'pipeline.sh'))}", **settings)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "gate passed: perplexity" in run.stdout
    promotion_id = int(re.search(r"promotion (\d+) requested", run.stdout)[1])
    trained = Job.objects.get(name="commit 1a2b3c")
    assert trained.status == "succeeded" and Job.objects.filter(source_job=trained, kind="evaluate").exists()
    assert Promotion.objects.get(pk=promotion_id).status == "requested"

    assert shell(f"tuneyard approve {promotion_id}", TUNEYARD_TOKEN=approver).returncode == 0
    deployed = shell(_cd_command(), TUNEYARD_TOKEN=token, PROJECT="demo", MODEL_NAME="ci-lora")
    assert deployed.returncode == 0, deployed.stderr
    values = dict(line.split("=", 1) for line in deployed.stdout.splitlines())
    assert values["TUNEYARD_MODEL_URI"] == "models:/demo.ci-lora/1"
    assert (values["TUNEYARD_MLFLOW_VERSION"], values["TUNEYARD_APPROVED_BY"]) == ("1", "carol")

    # A gate that fails stops the pipeline before anything is registered or requested.
    failing = shell(
        f"sh {shlex.quote(str(CI / 'pipeline.sh'))}", **settings | {"GATE_MAX": "0", "RUN_NAME": "2"}
    )
    assert failing.returncode == 1 and "gate failed: perplexity" in failing.stderr
    assert Promotion.objects.count() == 1
