"""The WSGI entry point gunicorn serves."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402

if settings.USES_DEV_SECRETS and not (settings.LAPTOP_MODE or settings.DEBUG):
    # Loud rather than silently insecure: with the well-known worker token anyone
    # could claim jobs and report forged results.
    raise ImproperlyConfigured(
        "Set SECRET_KEY and WORKER_TOKEN to serve Tuneyard (or TUNEYARD_LAPTOP=true on a laptop)."
    )
