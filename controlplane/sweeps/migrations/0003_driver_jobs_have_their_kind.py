"""A Ray sweep's driver job has its own kind (it was a finetune known only by its sweep's link)."""

from django.db import migrations


def driver_jobs_kind(apps, schema_editor):
    Sweep = apps.get_model("sweeps", "Sweep")
    Job = apps.get_model("training", "Job")
    drivers = Sweep.objects.exclude(driver_job=None).values_list("driver_job_id", flat=True)
    Job.objects.filter(pk__in=list(drivers)).update(kind="sweep-driver")


def driver_jobs_back(apps, schema_editor):
    Job = apps.get_model("training", "Job")
    Job.objects.filter(kind="sweep-driver").update(kind="finetune")


class Migration(migrations.Migration):
    dependencies = [
        ("sweeps", "0002_ray_backend"),
        ("training", "0011_job_kind_sweep_driver_and_spec"),
    ]

    operations = [migrations.RunPython(driver_jobs_kind, driver_jobs_back)]
