from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0013_backfill_job_summaries"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="input_uri",
            field=models.CharField(blank=True, max_length=2000),
        ),
    ]
