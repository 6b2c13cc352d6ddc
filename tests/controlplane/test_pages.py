"""A project's sections, the site's navigation and its refusals, as the server renders them."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from controlplane.training.models import JobStatus
from tests.conftest import PASSWORD
from tests.factories import (
    base_model_make,
    dataset_version_make,
    job_make,
    model_version_make,
    promotion_make,
)

pytestmark = pytest.mark.django_db

SECTIONS = ("", "datasets", "models", "sweeps", "settings")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_is_a_page_of_its_own_with_the_project_nav(people, section):
    html = _client(people["alice"]).get(f"/p/demo/{section}").content.decode()

    nav = re.search(r'<nav class="sections".*?</nav>', html, re.S).group(0)
    for url in ("/p/demo/", "/p/demo/datasets", "/p/demo/models", "/p/demo/sweeps", "/p/demo/settings"):
        assert f'href="{url}"' in nav
    assert 'href="/workers/?project=demo"' in nav
    # The page names its section, which the navigation marks as the current one.
    assert f'data-section="{section or "overview"}"' in html


@pytest.mark.parametrize("section", SECTIONS)
def test_an_outsider_gets_the_sites_404_page_for_every_section(people, section):
    response = _client(people["charlie"]).get(f"/p/demo/{section}")

    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="error-page"' in html and 'href="/"' in html
    assert "Demo" not in html


def test_the_workers_page_keeps_the_project_nav_for_members_only(people):
    html = _client(people["alice"]).get("/workers/?project=demo").content.decode()

    assert 'id="project-nav"' in html and 'data-section="workers"' in html
    assert 'id="project-nav"' not in _client(people["alice"]).get("/workers/").content.decode()
    assert _client(people["charlie"]).get("/workers/?project=demo").status_code == 404


def test_the_project_switcher_lists_the_readers_projects_only(people):
    member_add(project=people["other"], username="alice", role=Role.VIEWER, password=PASSWORD)

    html = _client(people["alice"]).get("/p/demo/").content.decode()

    switcher = re.search(r'<details class="switcher".*?</details>', html, re.S).group(0)
    assert 'href="/p/demo/"' in switcher and 'href="/p/other/"' in switcher
    assert 'href="/p/demo/"' not in _client(people["charlie"]).get("/p/other/").content.decode()


def test_the_overview_shows_what_runs_waits_and_the_newest_ten_runs(people):
    demo, alice = people["demo"], people["alice"]
    jobs = [job_make(demo, alice) for _ in range(12)]
    from controlplane.training.models import Job

    Job.objects.filter(pk__in=[j.pk for j in jobs[:11]]).update(status=JobStatus.SUCCEEDED)

    html = _client(alice).get("/p/demo/").content.decode()

    now = re.search(r'<section class="card" id="now">.*?</section>', html, re.S).group(0)
    assert f"/jobs/{jobs[11].pk}/" in now and f"/jobs/{jobs[0].pk}/" not in now
    recent = re.search(r'<section class="card" id="jobs">.*?</section>', html, re.S).group(0)
    assert len(re.findall(r'<tr><td><a href="/jobs/\d+/">', recent)) == 10
    assert f'href="/jobs/{jobs[0].pk}/"' not in recent
    # The quick actions sit in the page's heading.
    heading = re.search(r'<div class="heading">.*?</div>\s*</div>', html, re.S).group(0)
    for action in ("New fine-tune", "New evaluation", "New sweep", "Upload dataset"):
        assert action in heading
    # The usage card went to the project dashboard.
    assert 'id="usage"' not in html


def test_a_viewer_sees_no_quick_actions(people):
    html = _client(people["viv"]).get("/p/demo/").content.decode()

    assert "New fine-tune" not in html and 'id="quick-actions"' not in html


def test_the_datasets_table_puts_each_value_under_its_header(people):
    version = dataset_version_make(people["demo"], people["alice"], row_count=1234)
    version.size_bytes = 5 * 1024 * 1024
    version.save()

    html = _client(people["alice"]).get("/p/demo/datasets").content.decode()

    table = re.search(r'<table id="datasets-table">.*?</table>', html, re.S).group(0)
    headers = [re.sub(r"<.*?>", "", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", table, re.S).group(1)
    cells = [re.sub(r"<.*?>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert len(cells) == len(headers)
    by_header = dict(zip(headers, cells, strict=True))
    assert by_header["Schema"] == "Instruction"
    assert by_header["Rows"] == "1234"
    assert by_header["Stored (Parquet)"] == "5.0\xa0MB"
    assert by_header["sha256"].startswith(version.sha256[:10])
    assert by_header["By"] == "alice"


def test_the_upload_form_is_on_the_datasets_page_in_a_card_of_its_own(people):
    html = _client(people["alice"]).get("/p/demo/datasets").content.decode()

    upload = re.search(r'<section class="card" id="upload">.*?</section>', html, re.S).group(0)
    assert 'action="/p/demo/datasets/upload"' in upload
    assert "Detect from the columns" in upload
    table = re.search(r'<section class="card" id="datasets">.*?</section>', html, re.S).group(0)
    assert "<form" not in table
    # A viewer reads the table without the form.
    assert 'id="upload"' not in _client(people["viv"]).get("/p/demo/datasets").content.decode()


def test_models_page_lists_deployed_requests_versions_and_base_models(people):
    demo, alice = people["demo"], people["alice"]
    job = job_make(demo, alice)
    version = model_version_make(job, alice, name="clicked")
    promotion_make(version, alice)
    base_model_make(demo)

    html = _client(people["carol"]).get("/p/demo/models").content.decode()

    for section in ("deployments", "promotions", "models", "base-models"):
        assert f'id="{section}"' in html
    promotions = re.search(r'<section class="card" id="promotions">.*?</section>', html, re.S).group(0)
    assert "Approve" in promotions and "Reject" in promotions
    assert "Request promotion" in html


def test_the_overview_lists_open_promotion_requests_for_an_approver(people):
    demo, alice = people["demo"], people["alice"]
    promotion_make(model_version_make(job_make(demo, alice), alice, name="asked"), alice)

    html = _client(people["carol"]).get("/p/demo/").content.decode()

    promotions = re.search(r'<section class="card" id="promotions">.*?</section>', html, re.S).group(0)
    assert "asked" in promotions and "Approve" in promotions


def test_settings_show_members_quotas_and_dispatch_for_admins_only(people):
    demo = people["demo"]
    demo.max_concurrent_gpus, demo.gpu_hours_quota = 4, 100.0
    demo.save()
    dana = member_add(project=demo, username="dana", role=Role.ADMIN, password=PASSWORD)

    admin = _client(dana).get("/p/demo/settings").content.decode()
    member = _client(people["alice"]).get("/p/demo/settings").content.decode()

    assert 'id="dispatch-toggle"' in admin and "Pause dispatch" in admin
    assert 'id="dispatch-toggle"' not in member
    members = re.search(r'<section class="card" id="members">.*?</section>', member, re.S).group(0)
    for name, role in (("alice", "Member"), ("carol", "Approver"), ("dana", "Admin"), ("viv", "Viewer")):
        assert re.search(rf"{name}.*?</td><td>{role}</td>", members)
    assert "charlie" not in members
    assert "100 per 30 days" in member and ">4<" in member


def test_times_carry_their_iso_instant_for_the_browser_to_localize(people):
    version = dataset_version_make(people["demo"], people["alice"])

    html = _client(people["alice"]).get("/p/demo/datasets").content.decode()

    iso = version.created_at.isoformat()
    match = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', html)
    assert match.group(1).startswith(iso[:19]) and match.group(2).endswith(" UTC")
    assert match.group(2).startswith(version.created_at.strftime("%Y-%m-%d %H:%M"))


def test_a_missing_page_is_the_sites_own_404_and_json_under_the_api(people):
    client = _client(people["alice"])

    page = client.get("/no/such/page")
    api = client.get("/api/v1/no-such-endpoint")
    internal = client.get("/internal/v1/no-such-endpoint")

    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert 'id="error-page"' in html and '<header class="top">' in html and "Go to your projects" in html
    assert "Using the URLconf" not in html  # not Django's technical page
    assert api.status_code == 404 and api.json() == {"error": "not_found", "message": "Not found."}
    assert internal.status_code == 404 and internal.json()["error"] == "not_found"


def test_a_forbidden_action_is_the_sites_own_403_page_with_its_reason(people):
    response = _client(people["alice"]).post("/p/demo/pause")

    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="error-page"' in html and '<header class="top">' in html
    assert "needs the admin role" in html
    assert _client(people["alice"]).post("/api/v1/projects/demo/pause").json()["error"] == "forbidden"


def test_a_server_failure_is_the_sites_500_page_and_json_under_the_api(people, rf):
    from controlplane.errors import server_error_answer

    page = server_error_answer(rf.get("/p/demo/"))
    api = server_error_answer(rf.get("/api/v1/jobs"))

    assert page.status_code == 500 and 'id="error-page"' in page.content.decode()
    assert "Go to your projects" in page.content.decode()
    assert api.status_code == 500 and api["Content-Type"] == "application/json"


def test_favicon_ico_is_served(people, client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")


def test_a_form_without_its_csrf_token_gets_the_sites_403_page(people):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people["alice"])

    response = client.post("/p/demo/datasets/upload", {"name": "x"})

    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="error-page"' in html and "reload the page" in html
