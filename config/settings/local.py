"""The embedded default: one machine, no servers to install (SQLite, filesystem broker)."""

import os

from .base import *  # noqa: F403
from .base import SECRET_KEY, VAR_DIR, env_bool

# Off unless DJANGO_DEBUG=1: `scripts/run-app` is what small teams expose to their annotators,
# and DEBUG pages list every URL pattern and show tracebacks with settings (docs/security.md).
DEBUG = env_bool("DJANGO_DEBUG", False)

if not SECRET_KEY:
    # A per-checkout key kept under var/ (git-ignored), so sessions survive restarts and no
    # secret ever lives in the repository.
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        import secrets

        VAR_DIR.mkdir(parents=True, exist_ok=True)
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

# A cache every process of `manage.py serve` shares (gunicorn workers, the Celery worker), so
# the failed sign-in counters (labeling/throttles.py) and DRF's rate throttles are per machine,
# not per process. REDIS_CACHE_URL (base.py) still wins when set.
if not os.environ.get("REDIS_CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# Serve static files straight from static/ (no collectstatic step on the embedded default).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
