"""Django settings, read from the environment (django-environ).

Defaults are the laptop ones: SQLite, a local Redis and a local MLflow server,
so ``make up`` works with nothing set. A team deployment sets DATABASE_URL,
REDIS_URL, MLFLOW_TRACKING_URI, SECRET_KEY and WORKER_TOKEN.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import environ
import plotly

from workers.spec import BROKER_PRIORITY_OPTIONS
from workers.uris import roots_parse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("TUNEYARD_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["localhost", "127.0.0.1", "[::1]", "web", "testserver"]),
)

DEBUG = env("DEBUG")
# A laptop (`make up`): one person, everything on loopback. Only there does the
# well-known development worker token work, and only from 127.0.0.1 / ::1.
LAPTOP_MODE = env.bool("TUNEYARD_LAPTOP", default=False)
_DEV_SECRET = "dev-only-secret-key-not-for-production"
_DEV_WORKER_TOKEN = "dev-worker-token"
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET)
# Workers authenticate to the internal API with this shared token.
WORKER_TOKEN = env.str("WORKER_TOKEN", default=_DEV_WORKER_TOKEN)
# controlplane/wsgi.py refuses to serve with these outside a laptop or DEBUG (tests and
# management commands may use them).
USES_DEV_SECRETS = SECRET_KEY == _DEV_SECRET or WORKER_TOKEN == _DEV_WORKER_TOKEN

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# A refused form gets the site's 403 page (JSON under /api/ and /internal/), not Django's bare one.
CSRF_FAILURE_VIEW = "controlplane.errors.csrf_failure_answer"

# --- a deployment behind TLS (HTTPS=true; infra/production.env lists the values) ---
# The TLS proxy in front must set X-Forwarded-Proto and drop any the client sent.
HTTPS = env.bool("HTTPS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
# Workers call the internal API and the MLflow gate from inside the deployment's own
# network, over plain HTTP, not through the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^internal/", r"^mlflow/"] if HTTPS else []
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = HTTPS
# Pages and the API run their own scripts only (django-csp sets the header).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # Plotly and htmx add <style> elements and style attributes as they draw.
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "controlplane.idempotency",
    "controlplane.accounts",
    "controlplane.datasets",
    "controlplane.training",
    "controlplane.registry",
    "controlplane.sweeps",
    "controlplane.experiments",
    "controlplane.dashboards",
    "controlplane.webhooks",
    "controlplane.evidence",
    "controlplane.site",
    "controlplane.mlflow_gate",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # An ETag on every GET answer, and 304 Not Modified when the caller already has it: a pipeline
    # polling a job or a deployment gets an empty answer until something changes.
    "django.middleware.http.ConditionalGetMiddleware",
    "controlplane.middleware.UnstorableTextGuard",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After the session's user is known: Idempotency-Key keys are the caller's own.
    "controlplane.idempotency.middleware.IdempotencyKeys",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: turns a login refused for too many failures into a 429 (see AXES_* below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'tuneyard.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# A request thread keeps its connection for this long instead of opening one per
# request (a new PostgreSQL connection costs Django about 20 ms here, more than
# the whole job submission); checked before reuse, so a restarted database is survived.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes (web, workers' API calls, the reconciler) share the file.
    # IMMEDIATE takes the write lock when a transaction begins, so a transaction
    # that read first never fails to upgrade its lock ("database is locked").
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# The lockout (django-axes) first: it refuses a locked-out login before the password is checked.
AUTHENTICATION_BACKENDS = [
    "controlplane.accounts.lockout.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Logins (the login page, the admin's, POST /api/v1/auth/token) are counted by django-axes in the
# database: after LOGIN_FAILURE_LIMIT failures of one username from one address, that pair is
# refused (429 + Retry-After) until LOGIN_LOCKOUT_SECONDS have passed since its last try.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("LOGIN_LOCKOUT_SECONDS", default=900))
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = True  # Retry-After counts from the last try
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "controlplane.accounts.lockout.lockout_response"
# Behind the TLS proxy every request comes from the proxy's address: the person's is the one the
# proxies in front append to X-Forwarded-For (see accounts.lockout.client_address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1 if HTTPS else 0)
AXES_CLIENT_IP_CALLABLE = "controlplane.accounts.lockout.client_address"
# People's API tokens: how long one lives unless asked otherwise, and at most.
API_TOKEN_DEFAULT_DAYS = env.int("API_TOKEN_DEFAULT_DAYS", default=90)
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=365)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Plotly's JavaScript is served from our own static files, never a CDN.
STATICFILES_DIRS = [
    BASE_DIR / "frontend" / "static",
    ("vendor/plotly", Path(plotly.__file__).parent / "package_data"),
]
# Served by WhiteNoise under content-hashed names, compressed (gzip) and cached for a year, once
# `collectstatic` has written its manifest (`make up` and the image run it, and it always writes one).
# Without a manifest (a fresh checkout, `runserver`) files keep their own names: a hashed name needs
# the manifest to resolve. The test suite serves from the finders, which know no hashed names: run it
# with STATIC_MANIFEST=false where STATIC_ROOT holds a manifest from an earlier `make up`.
STATIC_MANIFEST = env.bool(
    "STATIC_MANIFEST",
    default=sys.argv[1:2] == ["collectstatic"] or (STATIC_ROOT / "staticfiles.json").is_file(),
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# A reference in a third-party stylesheet to a file its package does not ship (source maps) must
# not fail collectstatic.
WHITENOISE_MANIFEST_STRICT = False

# Uploads are streamed to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# A JSON body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is a 413, and one whose arrays and objects
# nest deeper than this a 400, both before it is parsed (JSON parsers recurse once per level).
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", default=64)
DATASET_MAX_UPLOAD_BYTES = env.int("DATASET_MAX_UPLOAD_BYTES", default=20 * 1024**3)
# Uploads wait here for the control worker: the web app and the control worker must share it.
DATASET_STAGING_DIR = Path(env.str("DATASET_STAGING_DIR", default=str(VAR_DIR / "uploads")))
# Resumable uploads: the largest piece one request may carry, and how long an
# unfinished upload nobody adds to keeps its staged bytes.
DATASET_UPLOAD_PIECE_MAX_BYTES = env.int("DATASET_UPLOAD_PIECE_MAX_BYTES", default=64 * 1024**2)
DATASET_UPLOAD_EXPIRE_SECONDS = env.int("DATASET_UPLOAD_EXPIRE_SECONDS", default=24 * 3600)
# Files up to this size are ingested within the request; larger ones by the control worker.
DATASET_INLINE_MAX_BYTES = env.int("DATASET_INLINE_MAX_BYTES", default=2 * 1024 * 1024)
# A dataset operation still queued after this long is sent again; one running but silent this
# long (no progress report) lost its control worker and is failed.
DATASET_OPERATION_REDISPATCH_SECONDS = env.int("DATASET_OPERATION_REDISPATCH_SECONDS", default=300)
DATASET_OPERATION_SILENT_SECONDS = env.int("DATASET_OPERATION_SILENT_SECONDS", default=900)
# A compressed upload expanding more than this many times is refused as a bomb.
DATASET_MAX_EXPANSION_RATIO = env.float("DATASET_MAX_EXPANSION_RATIO", default=100.0)
# The most one row may take in an uploaded file (a JSONL line, a JSON array's element, a CSV
# record) and one text value of a row: a reader holds a row whole, so these bound its memory.
DATASET_MAX_LINE_BYTES = env.int("DATASET_MAX_LINE_BYTES", default=1024 * 1024)
DATASET_MAX_FIELD_BYTES = env.int("DATASET_MAX_FIELD_BYTES", default=256 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.accounts.authentication.TokenScopePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.errors.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tuneyard API",
    "DESCRIPTION": "Datasets, fine-tuning jobs, model versions, promotions and deployments.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "OAS_VERSION": "3.1.0",
    # The workers' internal API is left out (controlplane.openapi.public_endpoints).
    "PREPROCESSING_HOOKS": ["controlplane.openapi.public_endpoints"],
    # Swagger UI from our own static files (drf-spectacular-sidecar), under the CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.idempotency.schema.idempotency_key_document",
    ],
}

# --- dispatch and tracking ---------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "control"
# Jobs carry a broker priority; both sides must agree on the bands (see workers.spec).
CELERY_BROKER_TRANSPORT_OPTIONS = dict(BROKER_PRIORITY_OPTIONS)
# How often the reconcilers look for lost messages and silent attempts.
JOB_RECONCILE_SECONDS = env.float("JOB_RECONCILE_SECONDS", default=30.0)
# How often the control worker sends the webhooks that are due (retries, and any its first send missed).
WEBHOOK_SEND_SECONDS = env.float("WEBHOOK_SEND_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE = {
    "jobs-redispatch-unclaimed": {
        "task": "training.jobs_redispatch_unclaimed",
        "schedule": JOB_RECONCILE_SECONDS * 2,
    },
    "jobs-recover-lost": {"task": "training.jobs_recover_lost", "schedule": JOB_RECONCILE_SECONDS},
    "registry-reconcile": {"task": "registry.reconcile", "schedule": 300.0},
    "evidence-model-cards-publish": {"task": "evidence.model_cards_publish", "schedule": 3600.0},
    "sweeps-reconcile": {"task": "sweeps.reconcile", "schedule": JOB_RECONCILE_SECONDS * 2},
    "datasets-operations-reconcile": {"task": "datasets.operations_reconcile", "schedule": 60.0},
    "datasets-uploads-expire": {"task": "datasets.uploads_expire", "schedule": 3600.0},
    "idempotency-records-expire": {"task": "idempotency.records_expire", "schedule": 3600.0},
    "webhooks-deliveries-send": {"task": "webhooks.deliveries_send", "schedule": WEBHOOK_SEND_SECONDS},
}
# A job committed but not published within this many seconds is sent again
# (the web process died in between, or the broker refused it).
JOB_PUBLISH_GRACE_SECONDS = env.int("JOB_PUBLISH_GRACE_SECONDS", default=10)
# A published job not claimed within JOB_UNCLAIMED_SECONDS whose message no
# longer waits in its queue was taken by a worker that died before claiming it:
# it is sent again. If the queue cannot be read, after JOB_REDISPATCH_AFTER_SECONDS.
# Messages lost with a broker restart are resent at once, found by the broker's run id.
JOB_UNCLAIMED_SECONDS = env.int("JOB_UNCLAIMED_SECONDS", default=60)
JOB_REDISPATCH_AFTER_SECONDS = env.int("JOB_REDISPATCH_AFTER_SECONDS", default=1800)
# A running attempt silent this long is presumed lost and retried, up to the limit.
JOB_HEARTBEAT_TIMEOUT_SECONDS = env.int("JOB_HEARTBEAT_TIMEOUT_SECONDS", default=120)
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", default=3)
# A worker silent this long is shown offline (workers heartbeat every 10 s).
WORKER_OFFLINE_AFTER_SECONDS = env.int("WORKER_OFFLINE_AFTER_SECONDS", default=60)
# A running job whose GPUs all show 0% utilization this long is flagged as idle.
GPU_IDLE_FLAG_SECONDS = env.int("GPU_IDLE_FLAG_SECONDS", default=600)

# Webhooks (controlplane.webhooks): never sent to loopback, private, link-local or other
# non-public addresses, except to networks a site admin lists here ("10.0.0.0/8,192.168.1.5/32").
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# After the first attempt fails, the next ones wait this long each (Standard Webhooks' schedule);
# past the last, the delivery is failed and a person may redeliver it.
WEBHOOK_RETRY_SECONDS = env.list(
    "WEBHOOK_RETRY_SECONDS", cast=int, default=[5, 300, 1800, 7200, 18000, 36000, 36000]
)

# Idempotency-Key (controlplane.idempotency): how long a key and its answer are kept; how long a
# retry waits for the first request with its key to finish before a 409; how long that first
# request may run before it is presumed dead and a retry may run in its place.
IDEMPOTENCY_RETENTION_SECONDS = env.int("IDEMPOTENCY_RETENTION_SECONDS", default=24 * 3600)
IDEMPOTENCY_WAIT_SECONDS = env.float("IDEMPOTENCY_WAIT_SECONDS", default=5.0)
IDEMPOTENCY_LEASE_SECONDS = env.int("IDEMPOTENCY_LEASE_SECONDS", default=300)

# Where sweeps keep their Optuna studies: by default the control plane's own
# PostgreSQL database (Optuna's tables beside ours), or a SQLite file in VAR_DIR.
OPTUNA_STORAGE_URL = env.str("OPTUNA_STORAGE_URL", default="")
# How often a running sweep's page refreshes its trials and charts (each refresh asks Optuna
# to draw its four figures again).
SWEEP_REFRESH_SECONDS = env.int("SWEEP_REFRESH_SECONDS", default=3)

# The control plane's own door to MLflow (controlplane.tracking), trusted with the registry's
# aliases. Nothing else should reach this address: people and workers go through the gate,
# /mlflow/ on this site (controlplane.mlflow_gate).
MLFLOW_TRACKING_URI = env.str("MLFLOW_TRACKING_URI", default="http://127.0.0.1:5000")
# Where a person's browser opens MLflow: the gate, on this same site.
MLFLOW_PUBLIC_URL = env.str("MLFLOW_PUBLIC_URL", default="/mlflow")
# Where people reach this site: the links back from MLflow runs to their job pages start here.
PUBLIC_URL = env.str("TUNEYARD_PUBLIC_URL", default="http://localhost:8000")
# Besides hub ids and the project's own MLflow runs and models, base models load
# only from under these roots (workers.uris): absolute paths on the workers, or
# object-store prefixes such as s3://bucket/models; comma-separated, none by
# default. Workers read the same variable. A malformed root fails here, at start.
MODEL_URI_ROOTS = list(roots_parse(env.str("MODEL_URI_ROOTS", default="")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
