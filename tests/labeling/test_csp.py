"""A Content-Security-Policy on every HTML page, and no inline script on any of them (issue 8,
item 8). Walks every GET route of the authorization matrix as each role, in the matrix's world,
and checks each HTML answer: the header is there, its script-src allows no inline script, and
the page has no inline <script> and no on* handler attribute (they would be blocked)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.labeling.test_authz import MATRIX, ROLES, all_routes, url_for, world  # noqa: F401

pytestmark = [pytest.mark.authz, pytest.mark.django_db]

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.I)


def _directives(header: str) -> dict[str, list[str]]:
    parts = [p.strip().split() for p in header.split(";") if p.strip()]
    return {p[0]: p[1:] for p in parts}


def test_every_html_page_has_a_csp_without_inline_script(world):  # noqa: F811
    routes = all_routes()
    pages = 0
    problems = []
    for key, route in sorted(MATRIX.items()):
        if route.method != "GET" or key not in routes:
            continue
        pattern, _ = routes[key]
        url = url_for(key, pattern, route, world["own"])
        for role in ROLES:
            client = Client()
            if world["users"][role] is not None:
                client.force_login(world["users"][role])
            response = client.get(url, follow=True)
            if not response.get("Content-Type", "").startswith("text/html"):
                continue
            pages += 1
            where = f"{url} as {role}"
            header = response.get("Content-Security-Policy")
            if not header:
                problems.append(f"{where}: no Content-Security-Policy")
                continue
            directives = _directives(header)
            script_src = directives.get("script-src", directives.get("default-src", []))
            if "'unsafe-inline'" in script_src or "'unsafe-eval'" in script_src:
                problems.append(f"{where}: script-src {script_src}")
            if directives.get("object-src") != ["'none'"]:
                problems.append(f"{where}: object-src {directives.get('object-src')}")
            body = response.content.decode()
            if match := INLINE_SCRIPT.search(body):
                problems.append(f"{where}: inline script {match.group(0)!r}")
            if match := HANDLER.search(body):
                problems.append(f"{where}: inline handler {match.group(0)[:80]!r}")
    assert pages > 40  # the walk reached the pages, not only redirects
    assert not problems, "\n".join(problems)


def test_error_pages_and_api_docs_have_the_csp_too(world):  # noqa: F811
    client = Client()
    client.force_login(world["users"]["engineer"])
    for url in ("/no-such-page/", "/api/v1/docs/"):
        response = client.get(url)
        assert "Content-Security-Policy" in response, url
