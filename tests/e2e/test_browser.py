"""The path of a person clicking through it, in Debian's Chromium driven by Playwright:
upload, launch, watch, follow the MLflow link, register, request, approve."""

from __future__ import annotations

import re

import pytest

from controlplane.datasets.models import DatasetVersion
from controlplane.site.demo import demo_jsonl
from controlplane.training.models import BaseModel
from tests.browsing import csp_violations, log_in, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_person_clicks_from_dataset_to_approved_deployment(
    browser, people, live_server, worker, tiny_model_uri, tmp_path
):
    from playwright.sync_api import expect

    BaseModel.objects.create(project=people["demo"], name="tiny-llama", uri=tiny_model_uri)
    base = live_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    # Every page works under the site's Content-Security-Policy: the browser reports no violation.
    violations = csp_violations(context)
    log_in(page, base, "alice")
    sections = page.locator("#project-nav")

    # A bad line is named in the upload's report, and nothing is stored.
    sections.get_by_role("link", name="Datasets", exact=True).click()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(demo_jsonl(3) + b'{"instruction": "no output here"}\n')
    page.get_by_label("Name").fill("arithmetic")
    page.get_by_label("Dataset file").set_input_files(str(bad))
    page.get_by_role("button", name="Upload dataset").click()
    expect(page.locator(".msg.error")).to_contain_text("line 4: 'output' is missing")
    expect(page.locator("#operation-report")).to_contain_text("missing")
    assert not DatasetVersion.objects.exists()
    page.get_by_role("link", name="back to Demo").click()

    good = tmp_path / "arithmetic.jsonl"
    good.write_bytes(demo_jsonl(64))
    page.get_by_label("Name").fill("arithmetic")
    page.get_by_label("Dataset file").set_input_files(str(good))
    page.get_by_role("button", name="Upload dataset").click()
    expect(page.locator(".msg.success")).to_contain_text("64 rows")

    # Launch a LoRA fine-tune from the form, a quick action of the project's overview.
    sections.get_by_role("link", name="Overview", exact=True).click()
    page.get_by_role("link", name="New fine-tune").click()
    page.get_by_label("Method").select_option("lora")
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_label("Max steps").fill("24")
    page.get_by_label("Max seq length").fill("64")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))

    # Watch it: queued -> running -> succeeded, with a live progress bar and loss chart.
    status = page.locator("#job-status")
    expect(status).to_have_text(re.compile("queued|running"))
    expect(status).to_have_text("running", timeout=120_000)
    expect(status).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#job-progress")).to_have_attribute("value", "100")
    expect(page.locator("#loss-chart")).to_have_attribute(
        "data-points", re.compile(r"^[1-9]\d+$"), timeout=30_000
    )
    expect(page.locator("#loss-chart .main-svg").first).to_be_visible()
    screenshot(page, "job-path.png")

    # The MLflow link opens the run in MLflow's own UI, through the gate, signed in as alice.
    link = page.locator("#mlflow-link")
    href = link.get_attribute("href")
    assert href.startswith("/mlflow/#/experiments/"), href
    mlflow_page = context.new_page()
    response = mlflow_page.goto(base + href)
    assert response.ok
    expect(mlflow_page).to_have_title(re.compile("MLflow"))
    expect(mlflow_page.locator("body")).to_contain_text(link.inner_text(), timeout=60_000)
    mlflow_page.close()

    # Register the result and ask for production.
    page.get_by_label("Model name").fill("clicked-lora")
    page.get_by_role("button", name="Register").click()
    # MLflow numbers versions per registered model, across this session's tests.
    expect(page.locator(".msg.success")).to_contain_text(re.compile(r"Registered clicked-lora v\d+"))
    sections.get_by_role("link", name="Models & deployments", exact=True).click()
    page.get_by_role("button", name="Request promotion").click()
    expect(page.locator("#promotions")).to_contain_text("waiting for another approver")
    expect(page.locator("#promotions").get_by_role("button", name="Approve")).to_have_count(0)

    # The approver approves.
    page.get_by_role("button", name="Log out").click()
    log_in(page, base, "carol")
    page.locator("#promotions").get_by_role("button", name="Approve").click()
    expect(page.locator(".msg.success")).to_contain_text(re.compile(r"clicked-lora v\d+ is now production"))
    deployed = page.locator("#deployments")
    expect(deployed).to_contain_text("clicked-lora")
    expect(deployed).to_contain_text("carol")
    expect(deployed).to_contain_text("models:/demo.clicked-lora/")
    screenshot(page, "project.png")
    # Managers read usage on the project's dashboard: charts, and alice among the people who ran jobs.
    sections.get_by_role("link", name="Dashboard", exact=True).click()
    page.wait_for_url(re.compile(r"/p/demo/dashboard"))
    expect(page.locator("main .main-svg").first).to_be_visible()
    expect(page.locator("main")).to_contain_text("alice")
    context.close()
    assert violations == []
