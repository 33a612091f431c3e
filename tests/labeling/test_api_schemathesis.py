"""Schemathesis against the API's own OpenAPI schema (issue 8, item 8): generated requests to
every operation, as an engineer of a project, and every response checked for what the schema
promises: no server error, a documented status code, a documented content type and a body that
validates against the documented schema. Bounded: a few examples per operation, derandomized
(the same examples every run), no example database, no deadline (the machine is shared), so it
runs in the ordinary suite.

Business rules (a wrong current password, an unknown project slug) may refuse a request the
schema allows; that is not a contract violation, so schemathesis's "positive data acceptance"
check is not among the checks.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import make_project, make_user

pytestmark = [pytest.mark.bad_input, pytest.mark.slow, pytest.mark.django_db]

EXAMPLES_PER_OPERATION = 5
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that need a trained model or run the ML stack in the request.
SKIPPED = {"POST /api/v1/projects/{slug}/predict/"}


@pytest.fixture
def wsgi_app():
    # The real WSGI handler, as gunicorn runs it. Django would close the test's connection at
    # each request start (its autocommit differs inside the test transaction), as the test
    # client avoids by the same means.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def test_every_operation_keeps_the_schemas_promises(wsgi_app):
    engineer = make_user("site_engineer")
    make_project(members=[engineer], slug="demo")
    raw = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = wsgi_app
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SKIPPED:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure is reproducible
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            # A fresh token each time: a generated password change or revocation may have
            # ended the previous one.
            key = Token.objects.get_or_create(user=engineer)[0].key
            case.call_and_validate(headers={"Authorization": f"Token {key}"}, checks=CHECKS)

        try:
            run()
        except BaseException as exc:  # a FailureGroup is a BaseExceptionGroup
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}:\n{str(exc)[:2000]}")
    assert operations > 30  # the walk reached the API, not one path
    assert not failures, "\n\n".join(failures)
