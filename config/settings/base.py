"""Settings shared by every shape of the app, read from the environment.

The embedded default needs no server: SQLite under var/, Celery's filesystem broker under
var/broker, files under var/media. Setting DATABASE_URL, CELERY_BROKER_URL and the S3 variables
moves each part to its scaled form without code changes.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("IMAGECLEAN_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labeling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy below on every response that has none of its own.
    "labeling.middleware.ContentSecurityPolicyMiddleware",
    # A request over IMAGECLEAN_MAX_REQUEST_BYTES is refused (413) before its body is read.
    "labeling.middleware.RequestSizeLimitMiddleware",
    # A view that cannot reach the database answers 503 with the app's page (or JSON).
    "labeling.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the person's choice (set_language's cookie), else the browser's
    # Accept-Language, else LANGUAGE_CODE. After sessions, before CommonMiddleware.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labeling.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", DEFAULT_SQLITE_URL), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so two
    # claims never deadlock upgrading a read lock (the "database is locked" failure mode).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# A connection kept between requests (CONN_MAX_AGE) is checked before its first use in each
# request or task, so the first one after a PostgreSQL restart reconnects instead of failing.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The labeling hot path PREPAREs its statements once per PostgreSQL session
# (labeling.services.hot_sql). Behind a pooler that moves one client's statements between server
# sessions (PgBouncer in transaction mode) set IMAGECLEAN_PREPARED_STATEMENTS=0.
LABELING_PREPARED_STATEMENTS = env_bool("IMAGECLEAN_PREPARED_STATEMENTS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# Every user-facing string goes through gettext; locale/<lang>/LC_MESSAGES holds the catalogs
# (compiled .mo files are committed). docs/i18n.md says how to add a language.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# The switcher's choice outlives the session (an annotator signs in and out every shift).
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("IMAGECLEAN_MEDIA_ROOT", VAR_DIR / "media"))

if os.environ.get("AWS_STORAGE_BUCKET_NAME"):
    # Any S3-compatible store (MinIO, Ceph, AWS). Credentials come from the environment only.
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"],
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Upload limits: the request as a whole, and each image after decoding.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# More files than this in one request is a 400 (Django's TooManyFilesSent), whatever their size.
DATA_UPLOAD_MAX_NUMBER_FILES = int(os.environ.get("IMAGECLEAN_MAX_REQUEST_FILES", 1000))
# One request's whole body (every file of an import together); bigger batches go through
# `manage.py import_images` (docs/security.md).
IMAGECLEAN_MAX_REQUEST_BYTES = int(
    os.environ.get("IMAGECLEAN_MAX_REQUEST_BYTES", 256 * 1024 * 1024)
)
IMAGECLEAN_MAX_UPLOAD_BYTES = int(os.environ.get("IMAGECLEAN_MAX_UPLOAD_BYTES", 50 * 1024 * 1024))
# An import request over either of these (all its files together) is not imported in the
# request: its files are staged to disk and an import job does it, with progress and a report
# on the job's page (labeling.services.imports.import_runs_as_job; docs/jobs.md). Workers on
# other hosts than the web need the staging folder on shared disk.
IMAGECLEAN_IMPORT_JOB_BYTES = int(os.environ.get("IMAGECLEAN_IMPORT_JOB_BYTES", 16 * 1024 * 1024))
IMAGECLEAN_IMPORT_JOB_FILES = int(os.environ.get("IMAGECLEAN_IMPORT_JOB_FILES", 100))
IMAGECLEAN_IMPORT_STAGING_DIR = Path(
    os.environ.get("IMAGECLEAN_IMPORT_STAGING_DIR", VAR_DIR / "import-staging")
)
IMAGECLEAN_MAX_IMAGE_BYTES = int(os.environ.get("IMAGECLEAN_MAX_IMAGE_BYTES", 20 * 1024 * 1024))
IMAGECLEAN_MAX_IMAGE_PIXELS = int(os.environ.get("IMAGECLEAN_MAX_IMAGE_PIXELS", 40_000_000))
# Pixels x bands x bytes per band of the decoded raster (a palette image counts 4 bands: it is
# converted to RGBA): 64 MiB is 4096 x 4096 RGBA or 22 megapixels RGB. A small file can declare
# a huge raster; this caps what decoding one image may cost (labeling/services/imports.py).
IMAGECLEAN_MAX_DECODED_BYTES = int(os.environ.get("IMAGECLEAN_MAX_DECODED_BYTES", 64 * 1024 * 1024))
# Images one process decodes at once (labeling/services/imports.py decode_slot); the others
# wait, so a web worker's decoding memory is at most this many times the cap above.
IMAGECLEAN_DECODE_CONCURRENCY = int(os.environ.get("IMAGECLEAN_DECODE_CONCURRENCY", 2))
# Rows of one label import file (labeling/services/exports.py); split bigger files.
IMAGECLEAN_MAX_LABEL_IMPORT_ROWS = int(
    os.environ.get("IMAGECLEAN_MAX_LABEL_IMPORT_ROWS", 1_000_000)
)
IMAGECLEAN_MAX_ZIP_MEMBERS = int(os.environ.get("IMAGECLEAN_MAX_ZIP_MEMBERS", 100_000))
IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES = int(
    os.environ.get("IMAGECLEAN_MAX_ZIP_UNCOMPRESSED_BYTES", 2 * 1024 * 1024 * 1024)
)
IMAGECLEAN_THUMBNAIL_SIZE = 256

# --- Security headers -----------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every page: scripts and styles from this site only, no inline script (the pages keep their
# code in static/ and their data in json_script blocks), no plugins, no framing. Inline style
# attributes stay allowed (a few templates and Swagger UI use them; they cannot run code).
# Image responses set their own stricter policy (labeling/views/media.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the labeling page's fetch() reads the token from the cookie
# A failed CSRF check gets the app's 403 page (labeling/views/errors.py), not Django's.
CSRF_FAILURE_VIEW = "labeling.views.errors.csrf_failure"

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The token scheme first: DRF answers an unauthenticated request with the first class's
    # challenge, so it is a 401 with `WWW-Authenticate: Token` (session auth has none: 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's token scheme, reading the roles in the same query as the token.
        "labeling.api.authentication.TokenWithRolesAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Services' ValidationError / PermissionDenied become 400 / 403 with a body, in one place.
    "EXCEPTION_HANDLER": "labeling.api.exceptions.exception_handler",
    # No `?format=` renderer override: the API chooses by the Accept header (and the export by
    # its own `as`), so the schema advertises no parameter that every view would refuse as
    # unknown (labeling/api/filters.py accepts declared parameters only).
    "URL_FORMAT_OVERRIDE": None,
    # Proxies in front of the app: the client address is REMOTE_ADDR (0) or its entry in
    # X-Forwarded-For (1 behind one proxy). Never trust a client-sent X-Forwarded-For by default.
    "NUM_PROXIES": int(os.environ.get("IMAGECLEAN_NUM_PROXIES", 0)),
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("IMAGECLEAN_THROTTLE_ANON", "60/min"),
        "user": os.environ.get("IMAGECLEAN_THROTTLE_USER", "6000/min"),
        # Failed sign-ins per account and per address, on /login/ and the token endpoint
        # (labeling/throttles.py): "10/15m" refuses the 11th within 15 minutes with 429.
        "login_failures": os.environ.get("IMAGECLEAN_LOGIN_FAILURES", "10/15m"),
    },
}
# API tokens expire this long after they are issued (0: never); labeling/services/tokens.py.
IMAGECLEAN_TOKEN_TTL_SECONDS = int(os.environ.get("IMAGECLEAN_TOKEN_TTL_SECONDS", 30 * 86400))
SPECTACULAR_SETTINGS = {
    "TITLE": "imageclean API",
    "DESCRIPTION": "Label, review and model an image pool with people and models together.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Several models have a `kind` or `status`: name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "labeling.models.Job.Kind",
        "JobStatusEnum": "labeling.models.Job.Status",
        "LabelKindEnum": "labeling.models.Label.Kind",
        "QueueKindEnum": "labeling.models.Queue.Kind",
        "ModelVersionStatusEnum": "labeling.models.ModelVersion.Status",
        "QueueItemStatusEnum": "labeling.models.QueueItem.Status",
    },
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Every operation documents its error responses and their body (labeling/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "labeling.api.schema.error_responses",
    ],
    # The docs page's JS/CSS come from drf-spectacular-sidecar's static files (no CDN, works
    # offline).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Cache (throttling state) ---------------------------------------------------------------
if os.environ.get("REDIS_CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_CACHE_URL"],
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: a real broker in a folder, no server to install.
    for _sub in ("out", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Broadcast (remote control) exchanges; kombu's default is a "control" folder in the cwd.
        "control_folder": str(BROKER_DIR / "control"),
    }
else:
    # Longer than the longest task (training: ML_TASK_TIME_LIMIT), or Redis re-delivers a
    # long job that is still running to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the Job table, not in a result backend
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The broker restarting (docs/jobs.md, "Faults"): a worker, beat or web process waits for it
# at start and reconnects after losing it, for ever rather than 100 tries (a worker that gave up
# would sit idle beside a healthy broker). A task running when the connection drops runs on:
# its Job row, not the message, says what is done, and `jobs_recover` sends again what the
# broker lost.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
CELERY_TASK_ROUTES = {"labeling.tasks.ml_*": {"queue": "ml"}}
CELERY_BEAT_SCHEDULE = {
    "expire-leases": {"task": "labeling.tasks.leases_expire", "schedule": 60.0},
}

# --- Background jobs (labeling/services/jobs.py) ----------------------------------------------
# A running job's heartbeat is beaten by a thread of its task every HEARTBEAT seconds, however
# long one step (a scoring batch, a training epoch) takes (labeling.services.jobs.JobHeartbeat).
# A RUNNING job whose heartbeat is older than STALE is taken to have lost its worker: the
# recovery sweep re-enqueues it (safe: every job task is idempotent). STALE must be several
# heartbeats, so a busy database does not make a live job look dead.
IMAGECLEAN_JOB_HEARTBEAT_SECONDS = float(os.environ.get("IMAGECLEAN_JOB_HEARTBEAT_SECONDS", 10))
IMAGECLEAN_JOB_STALE_SECONDS = int(os.environ.get("IMAGECLEAN_JOB_STALE_SECONDS", 60))
# Where a training job keeps its state after each epoch, so a redelivery after a dead worker
# resumes there (labeling.services.training). Workers on several hosts need it on shared disk
# to resume each other's jobs; otherwise a job taken over elsewhere trains from the start.
IMAGECLEAN_JOB_STATE_DIR = Path(os.environ.get("IMAGECLEAN_JOB_STATE_DIR", VAR_DIR / "job-state"))
# Per-queue task time limits (soft raises inside the task, hard kills it). ml tasks stay under
# the Redis visibility_timeout above, or Redis would hand a running task to a second worker.
IMAGECLEAN_ML_TASK_SOFT_TIME_LIMIT = int(os.environ.get("IMAGECLEAN_ML_SOFT_LIMIT", 5 * 3600))
IMAGECLEAN_ML_TASK_TIME_LIMIT = int(os.environ.get("IMAGECLEAN_ML_TIME_LIMIT", 5 * 3600 + 600))
IMAGECLEAN_DEFAULT_TASK_SOFT_TIME_LIMIT = int(os.environ.get("IMAGECLEAN_SOFT_LIMIT", 600))
IMAGECLEAN_DEFAULT_TASK_TIME_LIMIT = int(os.environ.get("IMAGECLEAN_TIME_LIMIT", 660))
# Pool scoring: images per shard (one task each), per batch, and DataLoader decode processes
# (>0 needs a worker started with --pool solo or threads: prefork children cannot fork).
IMAGECLEAN_SCORING_SHARD_SIZE = int(os.environ.get("IMAGECLEAN_SCORING_SHARD_SIZE", 512))
IMAGECLEAN_SCORING_BATCH_SIZE = int(os.environ.get("IMAGECLEAN_SCORING_BATCH_SIZE", 64))
IMAGECLEAN_SCORING_LOADER_WORKERS = int(os.environ.get("IMAGECLEAN_SCORING_LOADER_WORKERS", 0))
IMAGECLEAN_ML_DEVICE = os.environ.get("IMAGECLEAN_ML_DEVICE", "auto")
# Webhooks (labeling.services.webhooks, docs/webhooks.md). Private, loopback and link-local
# addresses are refused as targets (SSRF: a project's URL must not reach the cluster's own
# services) unless this is set, e.g. for a receiver on the same host in tests or a lab.
IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE = os.environ.get("IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE", "") == "1"
IMAGECLEAN_WEBHOOK_TIMEOUT = float(os.environ.get("IMAGECLEAN_WEBHOOK_TIMEOUT", 10))
# Attempts per delivery, and the first retry's wait in seconds: it doubles each time (30 s,
# 1 min, 2 min, ... about 16 min before the sixth attempt).
IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("IMAGECLEAN_WEBHOOK_MAX_ATTEMPTS", 6))
IMAGECLEAN_WEBHOOK_BACKOFF = float(os.environ.get("IMAGECLEAN_WEBHOOK_BACKOFF", 30))
CELERY_BEAT_SCHEDULE["recover-stalled-jobs"] = {
    "task": "labeling.tasks.jobs_recover",
    "schedule": 60.0,
}
# Staged uploads of import jobs that will never run (labeling.services.imports.staging_sweep).
CELERY_BEAT_SCHEDULE["sweep-import-staging"] = {
    "task": "labeling.tasks.import_staging_sweep",
    "schedule": 3600.0,
}
