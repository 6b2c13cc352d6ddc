"""API tokens made before they were hashed (DRF's authtoken table, keys in clear) become ApiTokens.

Each keeps working, now stored as a SHA-256 digest, with every scope and the
default lifetime from today; then the old table, which held the keys in clear,
is dropped. A database that never had the table has nothing to move.
"""

import hashlib
from datetime import UTC, timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

OLD_TABLE = "authtoken_token"


def tokens_move(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    expires_at = timezone.now() + timedelta(days=settings.API_TOKEN_DEFAULT_DAYS)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        token = ApiToken.objects.create(
            user_id=user_id,
            name="made before tokens were hashed",
            prefix=key[:8],
            digest=hashlib.sha256(key.encode()).hexdigest(),
            scopes=["read", "write", "approve"],
            expires_at=expires_at,
        )
        # SQLite hands back the stored UTC time without its zone.
        created = timezone.make_aware(created, UTC) if timezone.is_naive(created) else created
        ApiToken.objects.filter(pk=token.pk).update(created_at=created)
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0004_api_tokens")]

    operations = [migrations.RunPython(tokens_move, migrations.RunPython.noop)]
