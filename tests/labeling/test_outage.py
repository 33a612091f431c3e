"""The web app while the database or the broker is unreachable (issue 8, item 2, in part): the
health endpoint says which part is down and recovers by itself; pages answer the app's 503 page
and the API a JSON 503, not a traceback.

The outage is real, made without stopping the shared services: the connection is pointed at a
port where nothing listens (connection refused, as while PostgreSQL restarts), then back. Real
restarts of a private PostgreSQL and Redis in the middle of a job, with a worker running, are in
tests/labeling/test_service_restarts.py.
"""

from __future__ import annotations

import pytest
from celery import current_app
from django.db import connection
from django.test import Client

from tests.factories import make_project, make_user

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

DEAD_PORT = "1"  # nothing listens there


def _database_down():
    connection.close()
    connection.settings_dict["PORT"] = DEAD_PORT


def _database_back(port):
    connection.close()
    connection.settings_dict["PORT"] = port


def test_health_pages_and_api_while_the_database_is_down_then_back():
    user = make_user("site_engineer")
    project = make_project(members=[user])
    client = Client()
    client.force_login(user)
    assert Client().get("/health/").json() == {"database": "ok", "broker": "ok"}

    port = connection.settings_dict["PORT"]
    _database_down()
    try:
        response = Client().get("/health/")
        assert response.status_code == 503
        assert response.json() == {"database": "unavailable", "broker": "ok"}
        page = client.get(f"/projects/{project.slug}/")
        assert page.status_code == 503
        body = page.content.decode()
        assert 'class="brand"' in body and "Traceback" not in body
        assert page["Retry-After"]
        api = client.get("/api/v1/projects/")
        assert api.status_code == 503
        assert "detail" in api.json()
    finally:
        _database_back(port)
    # Back by itself: no restart of the app.
    assert Client().get("/health/").status_code == 200
    assert client.get(f"/projects/{project.slug}/").status_code == 200


def test_health_reports_a_broker_outage():
    url = current_app.conf.broker_write_url
    current_app.conf.broker_write_url = f"redis://127.0.0.1:{DEAD_PORT}/0"
    try:
        response = Client().get("/health/")
        assert response.status_code == 503
        assert response.json() == {"database": "ok", "broker": "unavailable"}
    finally:
        current_app.conf.broker_write_url = url
    assert Client().get("/health/").status_code == 200
