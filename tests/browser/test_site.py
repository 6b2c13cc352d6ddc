"""The site's frame in Chromium: the navigation to every project section at 1440 and 390 px, the project
switcher, the datasets table, the site's own error pages, the favicon, times in the reader's zone, and
static files served compressed under hashed names by the production web process."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from controlplane.datasets.models import DatasetOperation, DatasetVersion
from controlplane.training.models import Job, JobStatus
from infra import processes
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.conftest import PASSWORD, ROOT, _start, _stop
from tests.factories import (
    base_model_make,
    dataset_version_make,
    job_make,
    model_version_make,
    promotion_make,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The project's sections, as the navigation names them, and the URL each opens.
SECTIONS = {
    "Overview": "/p/demo/",
    "Datasets": "/p/demo/datasets",
    "Models & deployments": "/p/demo/models",
    "Sweeps": "/p/demo/sweeps",
    "Workers": "/workers/?project=demo",
    "Settings": "/p/demo/settings",
}


@pytest.fixture
def project_rows(people):
    """A project with something in every section: datasets, runs (one running), a model version asked
    for production, a base model."""
    demo, alice = people["demo"], people["alice"]
    for n in range(3):
        version = dataset_version_make(demo, alice, row_count=1000 + n)
        DatasetVersion.objects.filter(pk=version.pk).update(size_bytes=(n + 1) * 3 * 1024 * 1024)
    jobs = [job_make(demo, alice) for _ in range(4)]
    Job.objects.filter(pk__in=[j.pk for j in jobs[:3]]).update(status=JobStatus.SUCCEEDED, progress=1.0)
    Job.objects.filter(pk=jobs[3].pk).update(status=JobStatus.RUNNING, progress=0.4)
    promotion_make(model_version_make(jobs[0], alice, name="arithmetic-lora"), alice)
    base_model_make(demo)
    return jobs


def _context(browser, viewport: dict, **options):
    context = browser.new_context(viewport=viewport, **options)
    return context, csp_violations(context)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440px", "390px"])
def test_every_project_section_is_reachable_from_the_nav_and_fits_the_screen(
    browser, live_server, people, project_rows, viewport
):
    from playwright.sync_api import expect

    context, violations = _context(browser, viewport)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    wide = {"/login/": overflow_px(page)}
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/p/demo/")
    nav = page.locator("#project-nav")
    for name, path in SECTIONS.items():
        nav.get_by_role("link", name=name, exact=True).click()
        page.wait_for_url(f"{live_server.url}{path}")
        expect(page.locator("#project-nav [aria-current=page]")).to_have_text(name)
        wide[path] = overflow_px(page)
    # The pages of a dataset and of the site around them fit too.
    version = DatasetVersion.objects.order_by("pk").first()
    operation = DatasetOperation.objects.create(
        project=people["demo"], name="wide", filename="d.jsonl", size_bytes=1, created_by=people["alice"]
    )
    for path in (
        f"/datasets/{version.pk}/",
        f"/dataset-operations/{operation.pk}/",
        "/workers/",
        "/account/tokens",
        "/no/such/page",
    ):
        page.goto(f"{live_server.url}{path}")
        wide[path] = overflow_px(page)
    assert wide == dict.fromkeys(wide, 0)

    if viewport == DESKTOP:
        page.goto(f"{live_server.url}/p/demo/")
        screenshot(page, "overview.png")
        page.goto(f"{live_server.url}/p/demo/datasets")
        screenshot(page, "datasets.png")
    else:
        # On a phone the sections scroll across the top, above the page.
        page.goto(f"{live_server.url}/p/demo/")
        nav_box, main_box = nav.bounding_box(), page.locator("main").bounding_box()
        assert nav_box["width"] <= PHONE["width"] and nav_box["y"] < main_box["y"]
        screenshot(page, "overview-phone.png")
    context.close()
    assert violations == []


def test_the_project_switcher_goes_to_another_project(browser, live_server, people):
    from playwright.sync_api import expect

    member_add(project=people["other"], username="alice", role=Role.VIEWER, password=PASSWORD)
    context, violations = _context(browser, DESKTOP)
    page = context.new_page()
    log_in(page, live_server.url, "alice")  # two projects: the home page lists them
    page.goto(f"{live_server.url}/p/demo/datasets")

    page.locator("#project-switcher summary").click()
    page.locator("#project-switcher").get_by_role("link", name=re.compile("^Other")).click()

    page.wait_for_url(f"{live_server.url}/p/other/")
    expect(page.locator("h1")).to_have_text("Other")
    expect(page.locator("#project-switcher summary")).to_have_text("Other")
    expect(page.locator("#project-nav")).to_contain_text("Datasets")
    context.close()
    assert violations == []


def test_the_datasets_table_shows_each_value_under_its_header(browser, live_server, people, project_rows):
    # Defect 1: the table had no schema cell, so Schema showed the row count, Rows the size, Size the hash.
    context, _ = _context(browser, DESKTOP)
    page = context.new_page()
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/p/demo/datasets")

    rows = page.evaluate(
        """() => {
          const table = document.querySelector("#datasets table");
          const headers = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
          return [...table.querySelectorAll("tbody tr")].map((tr) =>
            Object.fromEntries([...tr.cells].map((td, i) => [headers[i], td.textContent.trim()])));
        }"""
    )

    for row in rows:
        assert row["Schema"] == "Instruction"
        assert re.fullmatch(r"\d+", row["Rows"])
        assert re.fullmatch(r"[\d.]+\xa0(bytes|KB|MB)", row["Stored (Parquet)"])
        assert re.fullmatch(r"\d{12}…", row["sha256"])
        assert row["By"] == "alice"
    large = sorted((row["Rows"], row["Stored (Parquet)"]) for row in rows if row["Rows"].startswith("100"))
    assert large == [("1000", "3.0\xa0MB"), ("1001", "6.0\xa0MB"), ("1002", "9.0\xa0MB")]
    # The upload form is in its own card, not inside the table.
    assert page.locator("#datasets form").count() == 0
    assert page.locator("#upload").get_by_label("Dataset file").count() == 1
    context.close()


def test_missing_and_forbidden_pages_are_the_sites_own_and_json_under_the_api(browser, live_server, people):
    from playwright.sync_api import expect

    context, violations = _context(browser, DESKTOP)
    page = context.new_page()
    log_in(page, live_server.url, "alice")

    missing = page.goto(f"{live_server.url}/p/nothing-here/")
    assert missing.status == 404
    expect(page.locator("header.top .brand")).to_be_visible()
    expect(page.locator("#error-page h1")).to_have_text("Nothing here")
    page.get_by_role("link", name="Go to your projects").click()
    page.wait_for_url(f"{live_server.url}/p/demo/")  # alice's one project

    # A POST the role refuses: the 403 page says which role it needs.
    page.goto(f"{live_server.url}/p/demo/settings")
    forbidden = page.evaluate(
        """async () => {
          const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
          const r = await fetch("/p/demo/pause", {method: "POST", headers: {"X-CSRFToken": token}});
          return {status: r.status, type: r.headers.get("content-type"), body: await r.text()};
        }"""
    )
    assert forbidden["status"] == 403 and forbidden["type"].startswith("text/html")
    assert 'id="error-page"' in forbidden["body"] and "needs the admin role" in forbidden["body"]
    assert '<header class="top">' in forbidden["body"]

    api = page.request.get(f"{live_server.url}/api/v1/nothing-here")
    assert api.status == 404 and api.json() == {"error": "not_found", "message": "Not found."}
    api = page.request.post(f"{live_server.url}/api/v1/projects/demo/pause")
    assert api.status == 403 and set(api.json()) >= {"error", "message"}
    assert page.request.get(f"{live_server.url}/internal/v1/nothing").json()["error"] == "not_found"
    context.close()
    assert violations == []


def test_the_favicon_is_served(browser, live_server, people):
    context, _ = _context(browser, DESKTOP)
    page = context.new_page()
    log_in(page, live_server.url, "alice")

    icon = page.request.get(f"{live_server.url}/favicon.ico")
    linked = page.locator("link[rel=icon]").get_attribute("href")

    assert icon.status == 200 and b"<svg" in icon.body()
    assert page.request.get(f"{live_server.url}{linked}").status == 200
    context.close()


def test_times_show_in_the_readers_zone_with_its_name_also_after_an_htmx_swap(browser, live_server, people):
    version = dataset_version_make(people["demo"], people["alice"])
    winter = dt.datetime(2026, 1, 15, 10, 5, tzinfo=dt.UTC)
    DatasetVersion.objects.filter(pk=version.pk).update(created_at=winter)
    job = job_make(people["demo"], people["alice"])
    Job.objects.filter(pk=job.pk).update(created_at=winter)
    context, violations = _context(browser, DESKTOP, timezone_id="Europe/Berlin", locale="en-GB")
    page = context.new_page()
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/p/demo/datasets")

    shown = page.locator("#datasets time").first
    assert re.fullmatch(r"15 Jan 2026, 11:05 (CET|GMT\+1)", shown.inner_text()), shown.inner_text()
    assert shown.get_attribute("title") == "2026-01-15 10:05 UTC"

    # A part htmx swaps in is shown in the reader's zone too.
    page.goto(f"{live_server.url}/p/demo/")
    page.evaluate("htmx.ajax('GET', '/p/demo/', {target: '#jobs', select: '#jobs', swap: 'outerHTML'})")
    page.wait_for_function("document.querySelector('#jobs time').dataset.localized !== undefined")
    swapped = page.locator("#jobs time").first
    assert re.fullmatch(r"15 Jan 2026, 11:05 (CET|GMT\+1)", swapped.inner_text()), swapped.inner_text()
    context.close()
    assert violations == []


# --- static files as the production web process serves them --------------------------------------


def _web(tmp: Path, *, manifest: bool) -> Iterator[str]:
    """gunicorn serving the test database, after `collectstatic` with or without hashed, compressed files."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        pytest.skip("the web process needs the test database on a server (PostgreSQL)")
    env = {
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "TUNEYARD_VAR_DIR": str(tmp),
        "STATIC_MANIFEST": "true" if manifest else "false",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "DEBUG": "false",
    }
    subprocess.run(
        [str(processes.BIN / "python"), "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    port = processes.free_port()
    web = _start(processes.web_command(port=port), tmp / "web.log", env)
    try:
        processes.wait_for_http(f"http://127.0.0.1:{port}/login/", process=web)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(web)


@pytest.fixture
def production_web(tmp_path: Path) -> Iterator[str]:
    yield from _web(tmp_path, manifest=True)


def test_plotly_is_served_compressed_under_a_hashed_name_with_a_long_cache_life(
    browser, production_web, people
):
    job = job_make(people["demo"], people["alice"])
    context, violations = _context(browser, DESKTOP)
    page = context.new_page()
    log_in(page, production_web, "alice")
    page.goto(f"{production_web}/jobs/{job.pk}/")

    src = page.locator("script[src*='plotly']").get_attribute("src")
    assert re.fullmatch(r"/static/vendor/plotly/plotly\.min\.[0-9a-f]{12}\.js", src), src
    response = httpx.get(f"{production_web}{src}", headers={"Accept-Encoding": "gzip, br"})
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] in ("gzip", "br")
    assert int(response.headers["Content-Length"]) < 2_000_000  # 4.85 MB as it is
    max_age = int(re.search(r"max-age=(\d+)", response.headers["Cache-Control"]).group(1))
    assert max_age >= 365 * 24 * 3600 and "immutable" in response.headers["Cache-Control"]
    # The site's own files too, and the page works with them (no CSP report, the chart library loaded).
    css = page.locator("link[rel=stylesheet]").get_attribute("href")
    assert re.fullmatch(r"/static/tuneyard\.[0-9a-f]{12}\.css", css), css
    assert page.evaluate("typeof Plotly") == "object"
    assert httpx.get(f"{production_web}/favicon.ico", follow_redirects=True).status_code == 200
    context.close()
    assert violations == []
