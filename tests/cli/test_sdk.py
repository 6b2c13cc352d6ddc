"""The Python client (client/tuneyard) against the live control plane: names resolved, typed rows,
pages followed, refusals typed, and a retried POST that launches one job, not two."""

from __future__ import annotations

import json

import httpx
import pytest

from controlplane.site.demo import demo_jsonl
from controlplane.training.models import Job
from tests.conftest import PASSWORD
from tests.factories import FACTORY_QUEUE, base_model_make
from tuneyard import Client, Invalid, JobFailed, NotFound, Unauthorized, Unreachable

pytestmark = pytest.mark.django_db(transaction=True)
CONFIG = {"hyperparameters": {"max_steps": 2}, "resources": {"queue": FACTORY_QUEUE}}


@pytest.fixture
def client(people, live_server):
    token = Client(live_server.url).token_obtain("alice", PASSWORD)
    with Client(live_server.url, token) as client:
        yield client


def test_a_pipeline_names_its_model_and_data_and_reads_typed_rows(client, people, mlflow_server, tmp_path):
    base = base_model_make(people["demo"])
    rows = [json.loads(line) for line in demo_jsonl(6).splitlines()]
    data = tmp_path / "renamed.jsonl"
    # The file calls its output "answer": --mapping says so.
    data.write_text(
        "".join(
            json.dumps({**{k: v for k, v in r.items() if k != "output"}, "answer": r["output"]}) + "\n"
            for r in rows
        )
    )
    version = client.datasets.upload(
        data, project="demo", name="renamed", schema="instruction", mapping={"output": "answer"}
    )
    assert (version.name, version.version, version.row_count, version.format) == (
        "renamed",
        1,
        6,
        "instruction",
    )
    assert (
        client.datasets.resolve("demo", "renamed")
        == client.datasets.resolve("demo", "renamed:v1")
        == version.id
    )

    job = client.jobs.submit(
        project="demo", base_model=base.name, dataset_version="renamed", config=CONFIG, name="by names"
    )
    assert (job.status, job.base_model, job.dataset_version, job.name) == (
        "queued",
        base.pk,
        version.id,
        "by names",
    )
    assert client.jobs.get(job.id).raw["config"]["hyperparameters"]["max_steps"] == 2
    assert job.id in [j.id for j in client.jobs.list("demo")]

    assert client.jobs.cancel(job.id).status in ("cancelled", "cancelling")
    with pytest.raises(JobFailed) as failure:
        client.jobs.wait(job.id, interval=0.2, timeout=30)
    assert failure.value.result.status == "cancelled"


def test_a_submit_whose_answer_was_lost_is_retried_and_launches_one_job(people, live_server):
    """The first POST reaches the server and its answer is lost on the way back: the client sends
    it again with the same Idempotency-Key, and the server answers with the job it already made."""
    base = base_model_make(people["demo"])
    from tests.factories import dataset_version_make

    dataset = dataset_version_make(people["demo"], people["alice"])

    class LosesFirstAnswer(httpx.HTTPTransport):
        lost = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            if request.method == "POST" and request.url.path.endswith("/jobs") and not self.lost:
                response.read()
                self.lost += 1
                raise httpx.ReadError("connection reset", request=request)
            return response

    token = Client(live_server.url).token_obtain("alice", PASSWORD)
    transport = LosesFirstAnswer()
    with Client(live_server.url, token, transport=transport) as client:
        job = client.jobs.submit(
            project="demo", base_model=base.pk, dataset_version=dataset.pk, config=CONFIG
        )
    assert transport.lost == 1
    assert list(Job.objects.values_list("pk", flat=True)) == [job.id]


def test_refusals_are_typed_and_say_why(client, people, live_server):
    base = base_model_make(people["demo"])
    with pytest.raises(NotFound):
        client.jobs.get(10**9)
    with pytest.raises(NotFound, match="no base model named 'nope'"):
        client.base_models.resolve("demo", "nope")
    with pytest.raises(Invalid, match="learning_rate"):
        client.jobs.submit(
            project="demo",
            base_model=base.pk,
            dataset_version=1,
            config={"hyperparameters": {"learning_rate": -1}},
        )
    with pytest.raises(Unauthorized):
        Client(live_server.url, "tyk_wrong").projects.list()
    with pytest.raises(Unreachable):
        Client("http://127.0.0.1:9", "t", retries=0).projects.list()
    assert not Job.objects.exists()
