"""Seed the default purposes (necessary, analytics, personalization, marketing) and consent categories."""

from django.db import migrations

from privacy.defaults import purposes_seed


def seed(apps, schema_editor):
    purposes_seed(apps.get_model("privacy", "Purpose"), apps.get_model("privacy", "CategoryMapping"))


class Migration(migrations.Migration):
    dependencies = [("privacy", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
