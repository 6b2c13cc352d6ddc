"""Jobs (evaluations, and finetunes with a held-out evaluation) stored before ``EvaluationConfig.special_tokens`` existed were scored without the
tokenizer's special tokens (lm-evaluation-harness's ``add_bos_token=False``): say so in their
config, so that reading it back does not show today's default (the tokenizer's own tokens)."""

from django.db import migrations


def scored_without_special_tokens(apps, schema_editor):
    Job = apps.get_model("training", "Job")
    for job in Job.objects.filter(config__has_key="evaluation").only("pk", "config").iterator():
        evaluation = job.config.get("evaluation") if isinstance(job.config, dict) else None
        if isinstance(evaluation, dict) and "special_tokens" not in evaluation:
            evaluation["special_tokens"] = "none"
            Job.objects.filter(pk=job.pk).update(config=job.config)


class Migration(migrations.Migration):
    dependencies = [("training", "0014_judge_job_input")]

    operations = [migrations.RunPython(scored_without_special_tokens, migrations.RunPython.noop)]
