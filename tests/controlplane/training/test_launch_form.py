"""The fine-tune launch form: it keeps what was typed on a refusal and says each error beside its
field, offers every option of the training config, ignores the fields of other methods, and
clone and edit fills it in from a job without launching anything."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from controlplane.training.models import Job
from tests.factories import FACTORY_QUEUE, base_model_make, dataset_version_make, job_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def page(people):
    client = Client()
    client.force_login(people["alice"])
    return client


@pytest.fixture
def inputs(people):
    return {
        "base_model": base_model_make(people["demo"]),
        "dataset_version": dataset_version_make(people["demo"], people["alice"]),
    }


def _form(inputs, **fields):
    return {
        "name": "",
        "base_model": inputs["base_model"].pk,
        "dataset_version": inputs["dataset_version"].pk,
        "method": "lora", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "learning_rate": 2e-4, "epochs": 1, "batch_size": 8, "max_seq_length": 256, "seed": 42,
        "gpus": 0, "priority": 0, "queue": FACTORY_QUEUE,
        **fields,
    }  # fmt: skip


def _field(html: str, name: str) -> str:
    """The markup of one field of the launch page, from its wrapper to the next field's."""
    start = html.index(f'id="field-{name}"')
    end = html.find('<div class="field', start + 1)
    return html[start : end if end != -1 else len(html)]


def test_a_refused_launch_keeps_what_was_typed_and_says_why_beside_the_field(page, inputs):
    form = _form(inputs, name="my careful run", max_steps=37, learning_rate=5, warmup_steps=3)

    response = page.post("/p/demo/jobs/new", form)

    # The form again, as typed, rather than a redirect to an empty one.
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="my careful run"' in _field(html, "name")
    assert 'value="37"' in _field(html, "max_steps")
    assert 'value="5"' in _field(html, "learning_rate")
    assert 'value="3"' in _field(html, "warmup_steps")
    assert f'<option value="{inputs["dataset_version"].pk}" selected>' in _field(html, "dataset_version")
    # The error beside its field, and a summary in words at the top, not a config path.
    assert "less than or equal to 1" in _field(html, "learning_rate")
    assert 'class="errorlist"' not in _field(html, "max_steps")
    summary = html[html.index('id="form-errors"') : html.index('id="launch-form"')]
    assert "Nothing was launched" in summary and "Learning rate:" in summary
    assert "config.hyperparameters" not in html
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        # Checked by the contract's validators, across fields.
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_steps", "“Warmup steps” or “Warmup ratio”"),
        ({"eval_every_steps": 5}, "eval_every_steps", "set “Validation split” too"),
        ({"gpus": 0, "distributed": "zero3"}, "gpus", "DeepSpeed needs CUDA GPUs"),
        ({"method": "qlora"}, "gpus", "needs a CUDA GPU: set “GPUs” to 1 or more"),
        ({"validation_fraction": 0.1, "eval_metrics": ["bleu"], "gpus": 2, "distributed": "fsdp"},
         "distributed", "the whole model in one process"),
        # Checked by the service, against the dataset.
        ({"objective": "dpo"}, "dataset_version", "learns from preference rows"),
    ],
)  # fmt: skip
def test_each_refusal_of_the_contract_or_service_is_shown_beside_its_field(
    page, inputs, fields, field, words
):
    response = page.post("/p/demo/jobs/new", _form(inputs, **fields))

    assert response.status_code == 200
    html = response.content.decode()
    beside = _field(html, field)
    assert 'class="errorlist"' in beside and words in beside, beside
    assert not Job.objects.exists()


def test_an_error_in_an_advanced_option_opens_its_section(page, inputs):
    html = page.post("/p/demo/jobs/new", _form(inputs, warmup_steps=10, warmup_ratio=0.1)).content.decode()

    training = html[html.index("<legend>Training</legend>") : html.index("<legend>Validation")]
    assert "<details open>" in training


def test_every_option_of_the_form_reaches_the_jobs_config(page, inputs):
    form = _form(
        inputs,
        name="all options", method="qlora", lora_r=16, lora_alpha=32, lora_dropout=0.1,
        target_modules="q_proj, v_proj", objective="sft", learning_rate=1e-3, epochs=2, max_steps=90,
        batch_size=4, max_seq_length=128, gradient_accumulation_steps=4, optimizer="paged_adamw_8bit",
        scheduler="cosine", warmup_ratio=0.05, weight_decay=0.01, max_grad_norm=0.5,
        mixed_precision="bf16", packing="off", gradient_checkpointing="on", seed=7,
        checkpoint_every_steps=25, validation_fraction=0.2, eval_every_steps=10,
        early_stopping_patience=3, early_stopping_metric="eval_bleu", early_stopping_greater_is_better="on",
        eval_metrics=["perplexity", "bleu"], eval_batch_size=2, eval_max_new_tokens=32,
        exact_match_ignore_case="on", gpus=1, timeout_seconds=3600, priority=20,
    )  # fmt: skip
    # completion_only_loss and double_quant are left unchecked, as a browser sends them.

    response = page.post("/p/demo/jobs/new", form)

    assert response.status_code == 302, response.content.decode()[-3000:]
    job = Job.objects.get()
    assert (job.name, job.priority, job.gpus, job.queue) == ("all options", 20, 1, FACTORY_QUEUE)
    config = job.config
    assert config["method"] == {
        "name": "qlora", "r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"],
        "double_quant": False,
    }  # fmt: skip
    assert config["objective"] == {"name": "sft"}
    hyper = config["hyperparameters"]
    assert hyper == hyper | {
        "learning_rate": 1e-3, "epochs": 2, "max_steps": 90, "batch_size": 4, "max_seq_length": 128,
        "gradient_accumulation_steps": 4, "optimizer": "paged_adamw_8bit", "scheduler": "cosine",
        "warmup_steps": 0, "warmup_ratio": 0.05, "weight_decay": 0.01, "max_grad_norm": 0.5,
        "mixed_precision": "bf16", "packing": "off", "gradient_checkpointing": True, "seed": 7,
        "completion_only_loss": False, "auto_find_batch_size": False, "checkpoint_every_steps": 25,
        "validation_fraction": 0.2, "eval_every_steps": 10, "early_stopping_patience": 3,
        "early_stopping_metric": "eval_bleu", "early_stopping_greater_is_better": True,
    }  # fmt: skip
    assert config["evaluation"] | {"metrics": None} == {
        "metrics": None, "batch_size": 2, "max_new_tokens": 32, "max_seq_length": 128,
        "exact_match_ignore_case": True, "rouge_use_stemmer": False, "num_fewshot": 0, "seed": 1234,
        "special_tokens": "tokenizer", "answer": None,
    }  # fmt: skip
    assert config["evaluation"]["metrics"] == ["perplexity", "bleu"]
    assert config["resources"] | {"distributed": None} == {
        "gpus": 1, "cpu_processes": 1, "distributed": None, "queue": FACTORY_QUEUE, "timeout_seconds": 3600,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "method"),
    [
        ({"method": "prefix_tuning", "num_virtual_tokens": 12, "projection": "on", "encoder_hidden_size": 64},
         {"name": "prefix_tuning", "num_virtual_tokens": 12, "projection": True, "encoder_hidden_size": 64}),
        ({"method": "p_tuning", "num_virtual_tokens": 8, "encoder_type": "lstm"},
         {"name": "p_tuning", "num_virtual_tokens": 8, "encoder_hidden_size": 128, "encoder_type": "lstm"}),
        ({"method": "prompt_tuning", "init_text": "Answer briefly:"},
         {"name": "prompt_tuning", "num_virtual_tokens": 20, "init_text": "Answer briefly:"}),
        ({"method": "ia3", "target_modules": "k_proj v_proj down_proj", "feedforward_modules": "down_proj"},
         {"name": "ia3", "target_modules": ["k_proj", "v_proj", "down_proj"],
          "feedforward_modules": ["down_proj"]}),
    ],
)  # fmt: skip
def test_each_methods_own_fields_reach_the_config(page, inputs, fields, method):
    response = page.post("/p/demo/jobs/new", _form(inputs, **fields))

    assert response.status_code == 302, response.content.decode()[-3000:]
    assert Job.objects.get().config["method"] == method


def test_a_dpo_launch_takes_its_beta_and_loss(page, people, inputs):
    preference = dataset_version_make(people["demo"], people["alice"], schema="preference")
    form = _form(inputs, dataset_version=preference.pk, objective="dpo", dpo_beta=0.3, dpo_loss_type="ipo")

    assert page.post("/p/demo/jobs/new", form).status_code == 302
    assert Job.objects.get().config["objective"] == {"name": "dpo", "beta": 0.3, "loss_type": "ipo"}


def test_the_fields_of_another_method_are_ignored_even_when_they_would_be_refused(page, inputs):
    # Hidden on the page for full fine-tuning; what they hold must not stop the launch.
    form = _form(
        inputs, method="full", lora_r=0, lora_alpha="", target_modules="not a module!", merge_adapter="on",
        num_virtual_tokens=0, dpo_beta=-1,
    )  # fmt: skip

    response = page.post("/p/demo/jobs/new", form)

    assert response.status_code == 302, response.content.decode()[-3000:]
    config = Job.objects.get().config
    assert config["method"] == {"name": "full"} and config["export"] is None


def test_the_page_groups_the_options_and_marks_each_methods_fields(page, inputs):
    html = page.get("/p/demo/jobs/new").content.decode()

    legends = re.findall(r'<fieldset class="group">\s*<legend>([^<]+)</legend>', html)
    assert legends == ["Basics", "Method", "Training", "Validation &amp; early stopping", "Resources"]
    assert 'data-method="lora qlora"' in _field(html, "lora_r")
    assert 'data-method="qlora"' in _field(html, "double_quant")
    assert 'data-method="lora ia3"' in _field(html, "merge_adapter")  # the mergeable methods
    assert 'data-method="prefix_tuning p_tuning prompt_tuning"' in _field(html, "num_virtual_tokens")
    assert 'data-objective="dpo"' in _field(html, "dpo_beta")
    assert "data-method" not in _field(html, "learning_rate")
    # Human labels, and a checkbox inside its label, before its words.
    assert '<label for="id_gpus">GPUs</label>' in html and "Gpus" not in html
    assert re.search(r'<label for="id_gradient_checkpointing"><input type="checkbox"[^>]*> Gradient', html)
    options = "warmup_steps scheduler optimizer gradient_accumulation_steps validation_fraction eval_metrics"
    for option in [*options.split(), "early_stopping_patience", "checkpoint_every_steps"]:
        assert f'id="field-{option}"' in html, option


def test_the_estimate_takes_the_new_options(page, people, inputs):
    # An estimate reads the base model's config: a hub id has none, and the steps are still counted.
    inputs["base_model"] = base_model_make(people["demo"], uri="meta-llama/Llama-3.1-8B")
    inputs["dataset_version"].row_count = 1000
    inputs["dataset_version"].save()
    form = _form(inputs, max_steps=90, gradient_accumulation_steps=4, scheduler="cosine", warmup_ratio=0.1)

    response = page.post("/p/demo/jobs/estimate", form)

    assert response.status_code == 200
    assert '<dd id="job-estimate-steps">90</dd>' in response.content.decode()
    refused = page.post("/p/demo/jobs/estimate", _form(inputs, warmup_steps=1, warmup_ratio=0.5))
    assert "Warmup steps: Give “Warmup steps” or “Warmup ratio”, not both" in refused.content.decode()
    assert not Job.objects.exists()


# --- clone and edit ------------------------------------------------------------------------------


def _job_with_options(people) -> Job:
    return job_make(
        people["demo"],
        people["alice"],
        config={
            "method": {"name": "lora", "r": 32, "alpha": 8, "target_modules": ["q_proj"]},
            "hyperparameters": {
                "learning_rate": 0.003, "max_steps": 40, "scheduler": "cosine", "warmup_steps": 4,
                "validation_fraction": 0.1, "eval_every_steps": 10, "early_stopping_patience": 2,
                "checkpoint_every_steps": None, "completion_only_loss": False,
            },
            "evaluation": {"metrics": ["rouge"], "max_seq_length": 256},
            "resources": {"distributed": {"name": "deepspeed", "stage": 2, "cpu_offload": True}, "gpus": 2},
            "export": {"merge_adapter": True},
        },
        priority=40,
    )  # fmt: skip


def test_clone_opens_the_form_filled_in_and_launches_nothing(page, people):
    job = _job_with_options(people)
    job.name = "baseline"
    job.save()

    response = page.get(f"/p/demo/jobs/new?from={job.pk}")

    assert response.status_code == 200
    assert Job.objects.count() == 1
    html = response.content.decode()
    assert f'href="/jobs/{job.pk}/"' in html[html.index('id="clone-source"') :]
    assert 'value="baseline (copy)"' in _field(html, "name")
    assert 'value="32"' in _field(html, "lora_r") and 'value="q_proj"' in _field(html, "target_modules")
    assert 'value="0.003"' in _field(html, "learning_rate") and 'value="40"' in _field(html, "max_steps")
    assert '<option value="cosine" selected>' in _field(html, "scheduler")
    assert '<option value="zero2_offload" selected>' in _field(html, "distributed")
    assert 'value="rouge"' in _field(html, "eval_metrics") and "checked" in _field(html, "eval_metrics")
    assert "checked" in _field(html, "merge_adapter") and "checked" not in _field(
        html, "completion_only_loss"
    )
    assert 'value="500"' not in _field(html, "checkpoint_every_steps")  # none, as the job had


def test_a_cloned_form_submitted_unchanged_launches_the_same_config(page, people):
    from controlplane.training.forms import JobLaunchForm

    job = _job_with_options(people)
    values = JobLaunchForm.initial_from(job)
    body = {key: value for key, value in values.items() if value not in (None, False)}
    body = {key: ("on" if value is True else value) for key, value in body.items()}
    body["target_modules"] = ", ".join(body["target_modules"])

    response = page.post("/p/demo/jobs/new", body)

    assert response.status_code == 302, response.content.decode()[-3000:]
    clone = Job.objects.exclude(pk=job.pk).get()
    assert clone.config == job.config
    assert (clone.name, clone.priority) == (f"{job.name} (copy)", job.priority)


def test_the_job_page_clone_button_opens_the_form(page, people):
    job = job_make(people["demo"], people["alice"])

    html = page.get(f"/jobs/{job.pk}/").content.decode()

    assert f'href="/p/demo/jobs/new?from={job.pk}"' in html
    # The old POST route opens the form too: nothing is launched from the job page.
    response = page.post(f"/jobs/{job.pk}/clone")
    assert response.status_code == 302 and response["Location"] == f"/p/demo/jobs/new?from={job.pk}"
    assert Job.objects.count() == 1


@pytest.mark.parametrize("source", ["999999999", "abc", "-1", "9" * 40, "other"])
def test_clone_of_an_unknown_or_foreign_job_opens_an_empty_form_with_a_message(page, people, source):
    if source == "other":
        secret = job_make(people["other"], people["charlie"])
        secret.name = "charlies-secret"
        secret.save()
        source = str(secret.pk)

    response = page.get(f"/p/demo/jobs/new?from={source}")

    assert response.status_code == 200
    html = response.content.decode()
    assert "has no job" in html and "the form starts empty" in html
    assert "charlies-secret" not in html and 'id="clone-source"' not in html


def test_the_outsider_cannot_clone_or_open_the_form(people):
    job = job_make(people["demo"], people["alice"])
    charlie = Client()
    charlie.force_login(people["charlie"])

    assert charlie.get(f"/p/demo/jobs/new?from={job.pk}").status_code == 404
    assert charlie.get(f"/p/demo/jobs/evaluate?from={job.pk}").status_code == 404
    assert charlie.get(f"/jobs/{job.pk}/clone").status_code == 404
    assert charlie.post(f"/jobs/{job.pk}/clone").status_code == 404
    # From charlie's own project, alice's job is unknown.
    html = charlie.get(f"/p/other/jobs/new?from={job.pk}").content.decode()
    assert "has no job" in html
    assert Job.objects.count() == 1


def test_clone_of_an_evaluation_opens_the_evaluate_form_filled_in(page, people, inputs):
    from controlplane.training.services import evaluate_job_create
    from workers.spec import EvaluateConfig

    evaluation = evaluate_job_create(
        project=people["demo"],
        user=people["alice"],
        base_model_id=inputs["base_model"].pk,
        dataset_version_id=inputs["dataset_version"].pk,
        config=EvaluateConfig.model_validate(
            {"evaluation": {"metrics": ["bleu", "rouge"], "max_new_tokens": 21}, "resources": {"queue": "q1"}}
        ),
        name="eval run",
        priority=5,
    )

    # From the fine-tune form (or the job page), an evaluation goes to its own form.
    response = page.get(f"/p/demo/jobs/new?from={evaluation.pk}")
    assert response.status_code == 302
    assert response["Location"] == f"/p/demo/jobs/evaluate?from={evaluation.pk}"
    assert (
        f'href="/p/demo/jobs/evaluate?from={evaluation.pk}"'
        in page.get(f"/jobs/{evaluation.pk}/").content.decode()
    )

    html = page.get(response["Location"]).content.decode()

    assert Job.objects.count() == 1
    assert 'value="eval run (copy)"' in _field(html, "name")
    assert 'value="21"' in _field(html, "max_new_tokens") and 'value="q1"' in _field(html, "queue")
    metrics = _field(html, "metrics")
    assert re.search(r'value="bleu"[^>]*checked', metrics) and not re.search(
        r'value="perplexity"[^>]*checked', metrics
    )
    assert f'<option value="{inputs["base_model"].pk}" selected>' in _field(html, "base_model")
    assert '<label for="id_gpus">GPUs</label>' in html


def test_clone_of_a_finetune_from_the_evaluate_form_goes_to_the_finetune_form(page, people):
    job = job_make(people["demo"], people["alice"])

    response = page.get(f"/p/demo/jobs/evaluate?from={job.pk}")

    assert response.status_code == 302 and response["Location"] == f"/p/demo/jobs/new?from={job.pk}"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"method": "bogus"}, "method"),
        ({"distributed": "zero9", "gpus": 2}, "distributed"),
        ({"eval_metrics": ["multiple_choice"]}, "eval_metrics"),
        ({"target_modules": "q_proj, v-proj!"}, "target_modules"),
        ({"target_modules": "x" * 3000}, "target_modules"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"learning_rate": "0"}, "learning_rate"),
        ({"gpus": "-1"}, "gpus"),
        ({"early_stopping_metric": "loss; drop"}, "early_stopping_metric"),
        (
            {"method": "ia3", "target_modules": "k_proj", "feedforward_modules": "down_proj"},
            "feedforward_modules",
        ),
        ({"batch_size": "9" * 30}, "batch_size"),
    ],
)
def test_odd_inputs_are_said_beside_their_field_never_a_500(page, inputs, fields, field):
    response = page.post("/p/demo/jobs/new", _form(inputs, **fields))

    assert response.status_code == 200
    assert 'class="errorlist"' in _field(response.content.decode(), field)
    assert not Job.objects.exists()


def test_the_form_as_it_opens_launches_the_contracts_defaults(page, people, inputs):
    from controlplane.training.forms import JobLaunchForm
    from workers.spec import TrainingConfig

    # What a browser sends for the untouched form: every field's initial value, unchecked boxes left out.
    body = {**_form(inputs)}
    for name, field in JobLaunchForm(project=people["demo"]).fields.items():
        value = field.initial
        if name in body or value is None or value is False:
            continue
        body[name] = "on" if value is True else value

    assert page.post("/p/demo/jobs/new", body).status_code == 302
    expected = TrainingConfig.model_validate({"resources": {"queue": FACTORY_QUEUE}})
    assert Job.objects.get().config == expected.model_dump(mode="json")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"metrics": ["perplexity", "multiple_choice"]},
            "metrics",
            "multiple_choice needs a dataset of schema",
        ),
        (
            {"num_fewshot": 2},
            "num_fewshot",
            "Few-shot examples (“Few-shot examples”, “Few-shot examples from”)",
        ),
        ({"base_model": ""}, "base_model", "Say what to evaluate: “Base model”"),
    ],
)
def test_the_evaluate_form_says_a_refusal_beside_its_field_and_keeps_what_was_typed(
    page, inputs, fields, field, words
):
    form = {
        "name": "kept name", "base_model": inputs["base_model"].pk,
        "dataset_version": inputs["dataset_version"].pk, "metrics": ["perplexity"], "num_fewshot": 0,
        "batch_size": 3, "max_new_tokens": 17, "gpus": 0,
        "queue": FACTORY_QUEUE, "priority": 0, **fields,
    }  # fmt: skip

    response = page.post("/p/demo/jobs/evaluate", form)

    assert response.status_code == 200
    html = response.content.decode()
    beside = _field(html, field)
    assert 'class="errorlist"' in beside and words in beside, beside
    assert 'value="kept name"' in _field(html, "name") and 'value="17"' in _field(html, "max_new_tokens")
    assert not Job.objects.exists()
