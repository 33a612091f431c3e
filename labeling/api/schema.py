"""What the OpenAPI schema says about errors (issue 8, item 8).

Every API error has a JSON body (labeling.api.exceptions, and labeling.views.errors for paths
no view matched): `{"detail": "..."}`, or for invalid input `{"<field>": ["..."], ...}`. This
drf-spectacular post-processing hook documents them on every operation, once, instead of on
each view: 401 (no or bad credentials, with `WWW-Authenticate`), 403 (the role does not allow
it), 404 (no such object, or not visible to the caller), 429 (throttled, with `Retry-After`),
and 400 for operations that take input. A status a view documents itself (the labels import's
400 report) is left as the view says.
"""

from __future__ import annotations

ERROR_SCHEMA = "Error"
ERROR_COMPONENT = {
    "type": "object",
    "description": (
        '`{"detail": "..."}`; for invalid input, the messages of each field: '
        '`{"<field>": ["..."]}` (a non-field message under `detail`).'
    ),
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
DESCRIPTIONS = {
    "400": "Invalid input: the messages of each field.",
    "401": "No credentials, or a bad or expired token (`WWW-Authenticate: Token`).",
    "403": "Signed in, but the role does not allow this.",
    "404": "No such object, or not visible to the caller.",
    "429": "Throttled; `Retry-After` says how many seconds to wait.",
}


def _error_response(status: str) -> dict:
    return {
        "description": DESCRIPTIONS[status],
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS entry: add the error responses to every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA] = ERROR_COMPONENT
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = ["401", "403", "404", "429"]
            if operation.get("requestBody") or operation.get("parameters"):
                statuses.insert(0, "400")
            if operation.get("security") == [{}] or {} in operation.get("security", []):
                statuses.remove("401")  # the operation is open to anonymous callers too
            for status in statuses:
                operation["responses"].setdefault(status, _error_response(status))
    return result
