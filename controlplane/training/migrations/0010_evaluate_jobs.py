"""Evaluate jobs: a job's kind (every stored job is a finetune), an evaluation's source job and
few-shot version. Columns with a default or nullable only: the release before still reads and
writes jobs while this one rolls out."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0003_chunked_uploads"),
        ("training", "0009_base_model_remote_code"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="fewshot_dataset_version",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="fewshot_jobs",
                to="datasets.datasetversion",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[("finetune", "Finetune"), ("evaluate", "Evaluate")],
                default="finetune",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="source_job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="evaluations",
                to="training.job",
            ),
        ),
    ]
