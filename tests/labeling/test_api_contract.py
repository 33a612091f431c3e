"""The OpenAPI schema promises only what the API does (issue 8, item 8, in part): no `format`
parameter that every view refuses, and unknown API paths answer JSON."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db


def _schema(client) -> dict:
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_no_operation_advertises_a_format_parameter_and_format_is_refused():
    client = APIClient()
    client.force_authenticate(make_user("engineer"))
    schema = _schema(client)
    advertised = [
        (path, method)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for parameter in operation.get("parameters", [])
        if parameter.get("name") == "format"
    ]
    assert not advertised
    project = make_project()
    response = client.get(f"/api/v1/projects/{project.slug}/labels/export/?format=csv")
    assert response.status_code == 400
    assert "format" in response.json()
    # The advertised way works.
    response = client.get(f"/api/v1/projects/{project.slug}/labels/export/?as=csv")
    assert response.status_code == 200


def test_unknown_api_paths_answer_json():
    client = APIClient()
    client.force_authenticate(make_user("annotator"))
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()
