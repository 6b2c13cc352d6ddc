"""Jobs stored before ``completion_only_loss`` existed trained on every token: keep it so.

Their config was dumped without the field; read now, it would take the new
default (the completion only), and a retried or resumed job would change its
loss midway. A clone of such a job trains as it did too.
"""

from django.db import migrations


def pin_whole_text_loss(apps, schema_editor):
    Job = apps.get_model("training", "Job")
    for job in Job.objects.only("pk", "config").iterator():
        hyperparameters = job.config.get("hyperparameters")
        if isinstance(hyperparameters, dict) and "completion_only_loss" not in hyperparameters:
            hyperparameters["completion_only_loss"] = False
            Job.objects.filter(pk=job.pk).update(config=job.config)


class Migration(migrations.Migration):
    dependencies = [("training", "0007_publish_record")]

    operations = [migrations.RunPython(pin_whole_text_loss, migrations.RunPython.noop)]
