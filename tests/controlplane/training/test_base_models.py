"""Base models: who may let a model's own code run on the workers, and where that choice travels."""

from __future__ import annotations

import pytest

from controlplane.training.models import BaseModel
from controlplane.training.services import job_spec_build
from tests.factories import base_model_make, job_make

pytestmark = pytest.mark.django_db


def test_a_base_model_runs_no_code_of_its_own_by_default(api_for):
    response = api_for("alice").post(
        "/api/v1/base-models", {"project": "demo", "name": "m", "uri": "org/model"}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["trust_remote_code"] is False


def test_a_member_cannot_allow_a_models_own_code_and_nothing_is_stored(api_for, people):
    people["demo"].memberships.filter(user=people["alice"]).update(role="admin")  # even a project admin

    response = api_for("alice").post(
        "/api/v1/base-models",
        {"project": "demo", "name": "m", "uri": "org/model", "trust_remote_code": True},
        format="json",
    )

    assert response.status_code == 403
    assert "site admin" in response.json()["message"]
    assert not BaseModel.objects.exists()


def test_staff_who_are_not_site_admins_cannot_allow_a_models_own_code(api_for, people):
    people["alice"].is_staff = True
    people["alice"].save(update_fields=["is_staff"])

    response = api_for("alice").post(
        "/api/v1/base-models",
        {"project": "demo", "name": "m", "uri": "org/model", "trust_remote_code": True},
        format="json",
    )

    assert response.status_code == 403
    assert not BaseModel.objects.exists()


def test_a_site_admin_outside_the_project_cannot_add_models_to_it(api_for, people):
    people["charlie"].is_superuser = True
    people["charlie"].save(update_fields=["is_superuser"])

    response = api_for("charlie").post(
        "/api/v1/base-models",
        {"project": "demo", "name": "m", "uri": "org/model", "trust_remote_code": True},
        format="json",
    )

    # A site admin reads every project (as a viewer) but changes none he is not a member of.
    assert response.status_code == 403 and "viewer" in response.json()["message"]
    assert not BaseModel.objects.exists()


def test_only_a_superuser_may_tick_the_box_in_the_admin_site(client, people):
    model = base_model_make(people["demo"])
    people["alice"].is_staff = True
    people["alice"].save(update_fields=["is_staff"])
    from django.contrib.auth.models import Permission

    people["alice"].user_permissions.add(*Permission.objects.filter(codename__endswith="_basemodel"))
    client.force_login(people["alice"])
    url = f"/admin/training/basemodel/{model.pk}/change/"

    page = client.get(url).content.decode()
    assert 'name="trust_remote_code"' not in page  # shown read-only

    people["alice"].is_superuser = True
    people["alice"].save(update_fields=["is_superuser"])
    assert 'name="trust_remote_code"' in client.get(url).content.decode()


def test_a_site_admin_can_allow_a_models_own_code_and_its_jobs_carry_it(api_for, people):
    people["alice"].is_superuser = True
    people["alice"].save(update_fields=["is_superuser"])

    response = api_for("alice").post(
        "/api/v1/base-models",
        {"project": "demo", "name": "m", "uri": "org/model", "trust_remote_code": True},
        format="json",
    )

    assert response.status_code == 201, response.json()
    model = BaseModel.objects.get(pk=response.json()["id"])
    assert model.trust_remote_code
    job = job_make(people["demo"], people["bob"])
    job.base_model = model
    job.save(update_fields=["base_model"])
    assert job_spec_build(job).trust_remote_code is True


def test_a_job_on_an_ordinary_base_model_does_not_trust_its_code(people):
    job = job_make(people["demo"], people["alice"])

    assert job_spec_build(job).trust_remote_code is False


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_trust_remote_code_must_be_a_boolean(api_for, people, value):
    people["alice"].is_superuser = True
    people["alice"].save(update_fields=["is_superuser"])

    response = api_for("alice").post(
        "/api/v1/base-models",
        {"project": "demo", "name": "m", "uri": "org/model", "trust_remote_code": value},
        format="json",
    )

    assert response.status_code == 400
    assert "trust_remote_code" in response.json()["message"]
    assert not BaseModel.objects.exists()


def test_the_project_page_marks_a_model_that_runs_its_own_code(client, people):
    base_model_make(people["demo"])
    BaseModel.objects.create(project=people["demo"], name="custom", uri="org/custom", trust_remote_code=True)
    client.force_login(people["alice"])

    page = client.get("/p/demo/models").content.decode()

    assert page.count("runs its own code") == 1
