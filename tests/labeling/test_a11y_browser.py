"""Accessibility (issue 9, "Done means"): axe-core, run by Playwright in Chromium, finds no
critical or serious violation on any page of the authorization matrix.

The pages are the matrix's own: every GET route of tests/labeling/test_authz.py that answers
an HTML page, with its URL built from the same world (two projects, their images, queues,
leases, model versions, review items). Each page is checked as the least-privileged role the
matrix lets in (what an annotator sees of the project page, say) and again as a site-wide
engineer when that one sees more. Left out: Django's admin (Django's templates) and the API's
Swagger UI page (`api-docs`, drf-spectacular-sidecar's bundle: its markup nests buttons in
buttons, its <html> has no lang and its greys fail contrast; none of it is ours to edit). Every
other page must pass.

axe-core is the npm package pinned in tests/a11y/package.json (package-lock.json holds its
hash); scripts/test runs `npm ci` there when it is missing. The rules are axe's WCAG 2.0/2.1
A and AA set plus its best practices; a failure lists each violation with the page, the role,
the rule, its help link and the first offending elements.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import Client

from tests.labeling.browser import ARGS, CHROMIUM, session_cookie
from tests.labeling.test_authz import (  # noqa: F401 (world is a fixture)
    MATRIX,
    OK,
    all_routes,
    expected_outcome,
    url_for,
    world,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

AXE = Path(__file__).resolve().parents[1] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("critical", "serious")
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
# Least privileged first: the first role the matrix lets in sees the page as most people do.
ROLES = ("anonymous", "annotator", "lead", "project_engineer", "engineer")
# Pages whose markup is a third-party bundle's (see the module's docstring).
THIRD_PARTY = frozenset({"api-docs"})

pytestmark = pytest.mark.browser


def pages(objects) -> list[tuple[str, str, str]]:
    """(route key, URL, role) for every HTML page of the matrix on the own project."""
    routes = all_routes()
    found = []
    for key, route in sorted(MATRIX.items()):
        if route.method != "GET" or key.startswith(("admin:", "pattern:admin")):
            continue
        if key in THIRD_PARTY:
            continue
        pattern, _ = routes[key]
        url = url_for(key, pattern, route, objects["own"])
        allowed = [r for r in ROLES if expected_outcome(route.own, "own", r) == OK]
        # The least privileged, and the site-wide engineer (who sees every control) if different.
        for role in dict.fromkeys(allowed[:1] + (["engineer"] if "engineer" in allowed else [])):
            client = Client()
            if objects["users"][role] is not None:
                client.force_login(objects["users"][role])
            response = client.get(url)
            if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
                found.append((key, url, role))
    return found


def _summary(key: str, url: str, role: str, violation: dict) -> str:
    nodes = "; ".join(node["target"][0] for node in violation["nodes"][:3])
    return (
        f"{key} ({url}) as {role}: [{violation['impact']}] {violation['id']}: "
        f"{violation['help']} ({violation['helpUrl']}) at {nodes}"
    )


@pytest.mark.django_db(transaction=True)
def test_no_critical_or_serious_violation_on_any_page(live_server, world):  # noqa: F811
    from playwright.sync_api import sync_playwright

    assert AXE.is_file(), f"{AXE} missing: run `npm ci --prefix tests/a11y` (scripts/test does)"
    axe_source = AXE.read_text()
    assert set(MATRIX) >= THIRD_PARTY  # an exclusion outliving its page would hide nothing
    checked = pages(world)
    # Every page kind of the product is among them (a broken URL builder must not pass quietly).
    keys = {key for key, _url, _role in checked}
    assert {"home", "login", "queue-annotate", "queue-grid", "project-review"} <= keys
    assert {"project-quality", "project-models", "jobs", "project-estimates"} <= keys
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            contexts = {}
            for key, url, role in checked:
                if role not in contexts:
                    # The page's CSP allows no inline script; axe is injected by the test only.
                    context = browser.new_context(bypass_csp=True, locale="en")
                    user = world["users"][role]
                    if user is not None:
                        context.add_cookies([session_cookie(user, live_server)])
                    contexts[role] = context.new_page()
                page = contexts[role]
                page.goto(live_server.url + url)
                page.wait_for_load_state("networkidle")
                page.evaluate(axe_source)
                result = page.evaluate(
                    "tags => axe.run(document, {runOnly: {type: 'tag', values: tags},"
                    " resultTypes: ['violations']})",
                    TAGS,
                )
                problems += [
                    _summary(key, url, role, violation)
                    for violation in result["violations"]
                    if violation["impact"] in BLOCKING
                ]
        finally:
            browser.close()
    assert len(checked) >= 30, checked
    assert not problems, f"{len(problems)} violations on {len(checked)} pages:\n" + "\n".join(
        problems
    )
