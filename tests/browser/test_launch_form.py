"""The fine-tune launch form in Chromium: a refused launch keeps what was typed and says why beside the
field (defect 2), a method's fields show only for that method (defect 9), Clone opens the form filled
in and launches nothing until it is submitted (defect 6), at 1440 and 390 px with no page overflow."""

from __future__ import annotations

import re

import pytest

from controlplane.training.models import Job
from tests.browsing import DESKTOP, PHONE, csp_violations, log_in, overflow_px, screenshot
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make, job_make

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def launch_inputs(people):
    demo, alice = people["demo"], people["alice"]
    return {
        "base_model": base_model_make(demo),
        "versions": [dataset_version_make(demo, alice) for _ in range(2)],
    }


def _open(browser, live_server, viewport, path="/p/demo/jobs/new"):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    violations = csp_violations(context)
    log_in(page, live_server.url, "alice")
    page.goto(live_server.url + path)
    return context, page, violations


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440px", "390px"])
def test_a_refused_launch_keeps_what_was_typed_and_shows_the_error_beside_its_field(
    browser, live_server, launch_inputs, viewport
):
    from playwright.sync_api import expect

    context, page, violations = _open(browser, live_server, viewport)
    second = launch_inputs["versions"][1]
    page.get_by_label("Name", exact=True).fill("careful run")
    page.get_by_label("Dataset version").select_option(str(second.pk))
    page.get_by_label("Max steps").fill("37")
    page.get_by_label("Learning rate", exact=True).fill("5")
    page.locator("#id_queue").fill(FACTORY_QUEUE)
    page.get_by_role("button", name="Launch").click()
    page.wait_for_load_state()

    # The same form, as it was typed, with the error beside the learning rate.
    expect(page.get_by_label("Name", exact=True)).to_have_value("careful run")
    expect(page.get_by_label("Dataset version")).to_have_value(str(second.pk))
    expect(page.get_by_label("Max steps")).to_have_value("37")
    expect(page.get_by_label("Learning rate", exact=True)).to_have_value("5")
    beside = page.locator("#field-learning_rate .errorlist")
    expect(beside).to_be_visible()
    expect(beside).to_contain_text("less than or equal to 1")
    field, error = page.locator("#id_learning_rate").bounding_box(), beside.bounding_box()
    assert 0 <= error["y"] - (field["y"] + field["height"]) < 40, (field, error)  # right under it
    summary = page.locator("#form-errors")
    expect(summary).to_contain_text("Nothing was launched")
    expect(summary).to_contain_text("Learning rate:")
    assert "config.hyperparameters" not in page.content()
    assert overflow_px(page) == 0
    assert not Job.objects.exists()

    # An error the contract finds across fields is beside its field too, and opens its section.
    page.get_by_label("Learning rate", exact=True).fill("0.001")
    page.locator("#launch-form").get_by_text("More training options").click()
    page.get_by_label("Warmup steps").fill("10")
    page.get_by_label("Warmup ratio").fill("0.1")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_load_state()
    expect(page.locator("#field-warmup_steps .errorlist")).to_contain_text("not both")
    expect(page.locator("#field-warmup_steps")).to_be_visible()
    expect(page.get_by_label("Max steps")).to_have_value("37")
    assert not Job.objects.exists()

    # Put right, it launches.
    page.get_by_label("Warmup ratio").fill("0")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))
    job = Job.objects.get()
    assert job.name == "careful run" and job.dataset_version_id == second.pk
    assert job.config["hyperparameters"]["max_steps"] == 37
    assert job.config["hyperparameters"]["warmup_steps"] == 10
    assert violations == []
    context.close()


def test_a_methods_fields_show_only_for_that_method(browser, live_server, launch_inputs):
    from playwright.sync_api import expect

    context, page, violations = _open(browser, live_server, DESKTOP)
    method = page.locator("#id_method")
    lora_rank, tokens = page.get_by_label("LoRA rank"), page.get_by_label("Virtual tokens")
    merge, double_quant = page.get_by_label("Merge the adapter"), page.get_by_label("Double quantization")

    expect(lora_rank).to_be_visible()
    expect(merge).to_be_visible()
    expect(tokens).to_be_hidden()
    expect(double_quant).to_be_hidden()

    method.select_option("full")
    expect(lora_rank).to_be_hidden()
    expect(page.get_by_text("More method options")).to_be_hidden()  # nothing in it for full
    expect(page.get_by_label("LoRA alpha")).to_be_hidden()
    expect(merge).to_be_hidden()  # a full model has no adapter to merge
    expect(tokens).to_be_hidden()

    method.select_option("qlora")
    expect(lora_rank).to_be_visible()
    expect(double_quant).to_be_visible()
    expect(merge).to_be_hidden()

    method.select_option("prefix_tuning")
    expect(tokens).to_be_visible()
    expect(page.get_by_label("Reparameterize through an MLP")).to_be_visible()
    expect(lora_rank).to_be_hidden()

    expect(page.get_by_label("DPO beta")).to_be_hidden()
    page.get_by_label("Objective").select_option("dpo")
    expect(page.get_by_label("DPO beta")).to_be_visible()

    # Human labels, and a checkbox beside its label rather than above it.
    expect(page.locator('label[for="id_gpus"]')).to_have_text("GPUs")
    page.locator("#launch-form").get_by_text("More training options").click()
    checkbox = page.locator("#id_gradient_checkpointing").bounding_box()
    label = page.locator('label[for="id_gradient_checkpointing"]').bounding_box()
    assert label["height"] < 2 * checkbox["height"] + 4, (checkbox, label)
    assert label["width"] > 4 * checkbox["width"], (checkbox, label)
    assert violations == []
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440px", "390px"])
def test_clone_opens_the_form_filled_in_and_launches_only_on_submit(
    browser, live_server, people, launch_inputs, viewport
):
    from playwright.sync_api import expect

    job = job_make(
        people["demo"],
        people["alice"],
        config={
            "method": {"name": "lora", "r": 32},
            "hyperparameters": {"learning_rate": 0.003, "max_steps": 40, "scheduler": "cosine"},
        },
    )
    Job.objects.filter(pk=job.pk).update(name="baseline")
    context, page, violations = _open(browser, live_server, viewport, f"/jobs/{job.pk}/")

    page.get_by_text("Clone", exact=True).click()
    page.wait_for_load_state()
    assert Job.objects.count() == 1, "Clone launched a job"
    page.wait_for_url(re.compile(rf"/p/demo/jobs/new\?from={job.pk}$"))

    # Filled in from the job; nothing launched yet.
    expect(page.locator("#clone-source")).to_contain_text(f"job {job.pk}")
    expect(page.get_by_label("Name", exact=True)).to_have_value("baseline (copy)")
    expect(page.get_by_label("LoRA rank")).to_have_value("32")
    expect(page.get_by_label("Learning rate", exact=True)).to_have_value("0.003")
    expect(page.get_by_label("Max steps")).to_have_value("40")
    assert overflow_px(page) == 0
    assert Job.objects.count() == 1

    page.get_by_label("Max steps").fill("12")
    page.get_by_role("button", name="Launch").click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))

    clone = Job.objects.exclude(pk=job.pk).get()
    assert clone.name == "baseline (copy)"
    assert clone.config["hyperparameters"]["max_steps"] == 12
    assert clone.config["hyperparameters"]["scheduler"] == "cosine"
    assert clone.config["method"]["r"] == 32
    assert clone.config["resources"]["queue"] == FACTORY_QUEUE
    assert violations == []
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1440px", "390px"])
def test_the_launch_form_fits_the_screen_with_every_section_open(
    browser, live_server, launch_inputs, viewport
):
    context, page, violations = _open(browser, live_server, viewport)
    assert overflow_px(page) == 0
    if viewport == DESKTOP:
        screenshot(page, "launch.png")

    page.locator("#launch-form").evaluate(
        "form => form.querySelectorAll('details').forEach(d => d.open = true)"
    )
    assert page.locator("#launch-form details[open]").count() == 4
    assert overflow_px(page) == 0
    screenshot(page, f"launch-open-{viewport['width']}.png")  # every option, for a person to look at

    # The evaluate form, in the same layout.
    page.goto(live_server.url + "/p/demo/jobs/evaluate")
    assert page.locator('label[for="id_gpus"]').inner_text() == "GPUs"
    assert overflow_px(page) == 0
    screenshot(page, f"evaluate-{viewport['width']}.png")
    assert violations == []
    context.close()
