"""Production-safe defaults (issue 8, item 4): DEBUG off on the embedded default unless
DJANGO_DEBUG=1, the app's own 403/404/500 pages with no internals, JSON errors under /api/.

This module is also a URLconf (the 500 tests point ROOT_URLCONF here): the project's routes plus
two views that fail, one page and one under /api/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import include, path

from tests.factories import make_user

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET_WORDS = "internal-detail-7f3a"  # in the failing views' exception, never in a response


def _boom(request):
    raise RuntimeError(f"{SECRET_WORDS} database password in a traceback")


urlpatterns = [
    path("boom/", _boom),
    path("api/v1/boom/", _boom),
    path("", include("config.urls")),
]
handler400 = "labeling.views.errors.bad_request"
handler403 = "labeling.views.errors.permission_denied"
handler404 = "labeling.views.errors.page_not_found"
handler500 = "labeling.views.errors.server_error"

# Signs of Django's technical pages (DEBUG=True) and of the bare default error pages.
TECHNICAL = ("URLconf", "Traceback", "Request Method", "settings.py", "<h1>Not Found</h1>")


def _is_app_page(body: str) -> bool:
    return 'class="brand"' in body and "labeling/app.css" in body


def _embedded(code: str, tmp_path, **env_extra) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        IMAGECLEAN_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(ROOT),
        **env_extra,
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


EMBEDDED_404 = """
from django.conf import settings
from django.test import Client
print("DEBUG", settings.DEBUG)
response = Client(HTTP_HOST="localhost").get("/no-such-page/")
print("STATUS", response.status_code)
print(response.content.decode())
"""


def test_embedded_default_has_debug_off_and_serves_the_apps_404(tmp_path):
    out = _embedded(EMBEDDED_404, tmp_path)
    assert "DEBUG False" in out
    assert "STATUS 404" in out
    assert _is_app_page(out), out
    for sign in TECHNICAL:
        assert sign not in out


def test_debug_is_on_only_when_asked(tmp_path):
    out = _embedded('from django.conf import settings; print("DEBUG", settings.DEBUG)', tmp_path)
    assert "DEBUG False" in out
    out = _embedded(
        'from django.conf import settings; print("DEBUG", settings.DEBUG)',
        tmp_path,
        DJANGO_DEBUG="1",
    )
    assert "DEBUG True" in out


@pytest.mark.django_db
def test_404_page_is_the_apps_and_api_404_is_json():
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert _is_app_page(body)
    assert not any(sign in body for sign in TECHNICAL)

    response = Client().get("/api/v1/no-such-endpoint/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"detail"}


@pytest.mark.django_db
def test_403_page_is_the_apps_and_says_nothing_internal():
    client = Client()
    client.force_login(make_user("annotator"))
    response = client.get("/jobs/")
    assert response.status_code == 403
    body = response.content.decode()
    assert _is_app_page(body)
    assert "403" in body


@pytest.mark.django_db
def test_500_shows_the_apps_page_or_json_and_no_traceback(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert _is_app_page(body)
    assert SECRET_WORDS not in body
    assert not any(sign in body for sign in TECHNICAL)

    response = client.get("/api/v1/boom/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert SECRET_WORDS not in response.content.decode()


@pytest.mark.django_db
def test_csrf_failure_gets_the_apps_403_page():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    assert _is_app_page(response.content.decode())
