"""Priorities reach the broker as bands workers take in order; an admin can pause a project's dispatch."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.errors import Conflict
from controlplane.training.models import Job, JobStatus
from controlplane.training.selectors import job_queue_position
from controlplane.training.services import job_claim, project_dispatch_pause
from tests.broker import queue_clear, queued_specs
from tests.factories import job_make

pytestmark = pytest.mark.django_db

QUEUE = "scheduling-test"  # no worker listens here
CONFIG = {"resources": {"queue": QUEUE}}


@pytest.fixture
def broker(redis_url):
    queue_clear(redis_url, QUEUE)
    yield redis_url
    queue_clear(redis_url, QUEUE)


def launch(people, capture, priority: int = 0) -> Job:
    with capture(execute=True):
        return job_make(people["demo"], people["alice"], config=CONFIG, priority=priority)


def test_a_worker_takes_the_most_urgent_job_first_whatever_the_order_sent(
    people, broker, django_capture_on_commit_callbacks
):
    low = launch(people, django_capture_on_commit_callbacks, priority=-50)
    normal = launch(people, django_capture_on_commit_callbacks)
    urgent = launch(people, django_capture_on_commit_callbacks, priority=100)
    later_normal = launch(people, django_capture_on_commit_callbacks)
    order = [urgent.pk, normal.pk, later_normal.pk, low.pk]
    assert [spec.job_id for spec in queued_specs(broker, QUEUE)] == order
    assert [job_queue_position(job=Job.objects.get(pk=pk)) for pk in order] == [1, 2, 3, 4]


@pytest.fixture
def dana(people):
    """An admin of project demo (pausing dispatch is for admins)."""
    from controlplane.accounts.models import Role
    from controlplane.accounts.services import member_add

    people["dana"] = member_add(project=people["demo"], username="dana", role=Role.ADMIN)
    return people["dana"]


def test_pausing_holds_queued_jobs_with_the_reason_and_resuming_sends_them(
    people, dana, api_for, broker, django_capture_on_commit_callbacks
):
    sent_before = launch(people, django_capture_on_commit_callbacks)
    assert api_for("charlie").post("/api/v1/projects/demo/pause").status_code == 404
    refused = api_for("alice").post("/api/v1/projects/demo/pause")
    assert refused.status_code == 403 and "admin" in refused.json()["message"]

    with django_capture_on_commit_callbacks(execute=True):
        project_dispatch_pause(project=people["demo"], user=dana, paused=True)
    held = launch(people, django_capture_on_commit_callbacks)
    held.refresh_from_db()
    assert held.dispatched_at is None and held.waiting_reason.startswith("paused:")
    assert [spec.job_id for spec in queued_specs(broker, QUEUE)] == [sent_before.pk]
    # The one sent before the pause is held when a worker comes for it.
    with pytest.raises(Conflict, match="paused"):
        job_claim(job_id=sent_before.pk, attempt=1, worker="w1")
    sent_before.refresh_from_db()
    assert sent_before.status == JobStatus.QUEUED and sent_before.waiting_reason.startswith("paused:")
    queue_clear(broker, QUEUE)  # the worker dropped the refused message

    page = Client()
    page.force_login(people["bob"])
    assert "Dispatch is paused by dana" in page.get("/p/demo/").content.decode()
    assert "paused" in page.get(f"/jobs/{held.pk}/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        body = api_for("dana").post("/api/v1/projects/demo/resume").json()
    assert body == {"project": "demo", "dispatch_paused": False, "paused_by": None}
    assert sorted(spec.job_id for spec in queued_specs(broker, QUEUE)) == [sent_before.pk, held.pk]
    assert not Job.objects.exclude(waiting_reason="").exists()
    # Resuming again changes nothing.
    assert api_for("dana").post("/api/v1/projects/demo/resume").status_code == 200
    assert len(queued_specs(broker, QUEUE)) == 2


def test_the_launch_form_sets_checkpoints_time_limit_and_priority(people, broker):
    from tests.factories import base_model_make, dataset_version_make

    base = base_model_make(people["demo"])
    version = dataset_version_make(people["demo"], people["alice"])
    page = Client()
    page.force_login(people["alice"])
    form = {
        "base_model": base.pk, "dataset_version": version.pk, "method": "full", "learning_rate": 0.001,
        "epochs": 1, "batch_size": 4, "max_seq_length": 64, "seed": 0, "gpus": 0, "priority": 7,
        "checkpoint_every_steps": "", "timeout_seconds": 600, "queue": QUEUE,
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0,
    }  # fmt: skip
    response = page.post("/p/demo/jobs/new", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = Job.objects.get()
    assert job.priority == 7 and job.config["resources"]["timeout_seconds"] == 600 and job.queue == QUEUE
    assert job.config["hyperparameters"]["checkpoint_every_steps"] is None
    assert job.config["export"] is None


def test_the_launch_form_merges_a_lora_adapter_and_a_full_model_ignores_the_lora_only_field(people, broker):
    from tests.factories import base_model_make, dataset_version_make

    base = base_model_make(people["demo"])
    version = dataset_version_make(people["demo"], people["alice"])
    page = Client()
    page.force_login(people["alice"])
    form = {
        "base_model": base.pk, "dataset_version": version.pk, "method": "full", "learning_rate": 0.001,
        "epochs": 1, "batch_size": 4, "max_seq_length": 64, "seed": 0, "gpus": 0, "priority": 0,
        "queue": QUEUE, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0, "merge_adapter": "on",
    }  # fmt: skip

    # "Merge the adapter" belongs to LoRA and IA3: a full fine-tune's form does not show it and
    # its value is left out (tests/controlplane/training/test_launch_form.py covers the rule).
    assert page.post("/p/demo/jobs/new", form).status_code == 302
    assert Job.objects.get().config["export"] is None

    assert page.post("/p/demo/jobs/new", form | {"method": "lora"}).status_code == 302
    assert Job.objects.latest("pk").config["export"] == {"merge_adapter": True}


def test_the_launch_form_sets_the_distributed_strategy_and_refuses_one_without_gpus(people, broker):
    from tests.factories import base_model_make, dataset_version_make

    page = Client()
    page.force_login(people["alice"])
    form = {
        "base_model": base_model_make(people["demo"]).pk,
        "dataset_version": dataset_version_make(people["demo"], people["alice"]).pk,
        "method": "lora", "learning_rate": 0.001, "epochs": 1, "batch_size": 4, "max_seq_length": 64,
        "seed": 0, "priority": 0, "checkpoint_every_steps": 100, "queue": QUEUE,
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0,
    }  # fmt: skip
    response = page.post("/p/demo/jobs/new", form | {"gpus": 4, "distributed": "fsdp_offload"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = Job.objects.get()
    assert job.gpus == 4
    assert job.config["resources"]["distributed"] == {"name": "fsdp", "cpu_offload": True}

    # Said on the launch page it came from, as every refused launch is.
    refused = page.post("/p/demo/jobs/new", form | {"gpus": 0, "distributed": "zero3"}, follow=True)
    assert refused.status_code == 200 and refused.redirect_chain == []  # the form again, as typed
    assert "DeepSpeed needs CUDA GPUs" in refused.content.decode()
    assert Job.objects.count() == 1


def test_after_a_resume_cpu_jobs_go_even_behind_a_gpu_job_over_quota(
    people, dana, broker, django_capture_on_commit_callbacks
):
    project = people["demo"]
    project.max_concurrent_gpus = 1
    project.save()
    capture = django_capture_on_commit_callbacks
    with capture(execute=True):
        project_dispatch_pause(project=project, user=dana, paused=True)
    with capture(execute=True):
        big = job_make(
            project, people["alice"], config={"resources": {"queue": QUEUE, "gpus": 2}}, priority=50
        )
        small = job_make(project, people["alice"], config=CONFIG)
    with capture(execute=True):
        project_dispatch_pause(project=project, user=dana, paused=False)
    big.refresh_from_db()
    small.refresh_from_db()
    assert big.waiting_reason.startswith("quota:")
    assert small.waiting_reason == "" and [s.job_id for s in queued_specs(broker, QUEUE)] == [small.pk]


def test_only_the_live_attempt_moves_the_checkpoint_and_only_forward(people):
    from controlplane.training.services import job_heartbeat, job_transition
    from workers.spec import Checkpoint, Heartbeat

    job = job_make(people["demo"], people["alice"], config=CONFIG)
    job_claim(job_id=job.pk, attempt=1, worker="w1")

    def beat(attempt: int, worker: str, step: int) -> None:
        checkpoint = Checkpoint(step=step, uri=f"runs:/r{attempt}/checkpoints/step-{step}")
        job_heartbeat(
            job_id=job.pk, heartbeat=Heartbeat(attempt=attempt, worker=worker, checkpoint=checkpoint)
        )

    beat(1, "w1", 20)
    beat(1, "w1", 10)  # a resent, older heartbeat
    job.refresh_from_db()
    assert (job.checkpoint_step, job.checkpoint_uri) == (20, "runs:/r1/checkpoints/step-20")
    # The attempt is presumed lost and retried; the old one, still alive somewhere, is fenced.
    assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.QUEUED)
    beat(1, "w1", 30)
    job.refresh_from_db()
    assert job.checkpoint_step == 20


def test_the_pause_buttons_are_for_admins_and_hidden_from_outsiders(people, dana):
    outsider, member, admin = Client(), Client(), Client()
    outsider.force_login(people["charlie"])
    member.force_login(people["alice"])
    admin.force_login(dana)
    assert outsider.post("/p/demo/pause").status_code == 404
    assert "Pause dispatch" not in member.get("/p/demo/settings").content.decode()
    assert member.post("/p/demo/pause").status_code == 403
    assert "Pause dispatch" in admin.get("/p/demo/settings").content.decode()
    assert admin.post("/p/demo/pause").status_code == 302
    assert "Resume dispatch" in admin.get("/p/demo/settings").content.decode()
