"""The OpenAPI schema promises only what the API does (issue 8, item 8, in part): no `format`
parameter that every view refuses, unknown API paths answer JSON, review/next's envelope and
the error bodies validate against what the schema documents for their status."""

from __future__ import annotations

import jsonschema
import pytest
from rest_framework.test import APIClient

from labeling.models import Label, QueueItem
from tests.factories import make_image, make_project, make_queue, make_user

pytestmark = pytest.mark.django_db


def _schema(client) -> dict:
    response = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_no_operation_advertises_a_format_parameter_and_format_is_refused():
    client = APIClient()
    client.force_authenticate(make_user("site_engineer"))
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


# --- Responses against the schema ---------------------------------------------------------------
def _json_schema(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema (a null alternative)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


class Contract:
    def __init__(self, schema: dict):
        self.schema = schema
        self.components = _json_schema(schema["components"])

    def check(self, template: str, method: str, response) -> None:
        operation = self.schema["paths"][template][method]
        documented = operation["responses"].get(str(response.status_code))
        assert documented, f"{method.upper()} {template}: {response.status_code} not documented"
        media = documented["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**_json_schema(media), "components": self.components})


def test_review_next_and_error_bodies_match_the_schema():
    lead, annotator, engineer = (
        make_user("lead"),
        make_user("annotator"),
        make_user("site_engineer"),
    )
    project = make_project(members=[lead, annotator])
    hidden = make_project()
    lead_client, annotator_client = APIClient(), APIClient()
    lead_client.force_authenticate(lead)
    annotator_client.force_authenticate(annotator)
    engineer_client = APIClient()
    engineer_client.force_authenticate(engineer)
    contract = Contract(_schema(engineer_client))
    template = "/api/v1/projects/{slug}/review/next/"
    url = f"/api/v1/projects/{project.slug}/review/next/"

    empty = lead_client.get(url)
    assert empty.status_code == 200 and empty.json() == {"item": None}
    contract.check(template, "get", empty)

    image = make_image(project)
    Label.objects.create(project=project, image=image, annotator=annotator, value="normal")
    review = make_queue(project, kind="review")
    QueueItem.objects.create(queue=review, image=image, strategy="noise_review")
    found = lead_client.get(url)
    assert found.status_code == 200 and found.json()["item"] is not None
    contract.check(template, "get", found)

    contract.check(template, "get", annotator_client.get(url))  # 403
    contract.check(template, "get", APIClient().get(url))  # 401
    contract.check(template, "get", lead_client.get(f"/api/v1/projects/{hidden.slug}/review/next/"))
    images = "/api/v1/projects/{slug}/images/"
    bad = lead_client.get(f"/api/v1/projects/{project.slug}/images/?splt=pool")
    assert bad.status_code == 400
    contract.check(images, "get", bad)
