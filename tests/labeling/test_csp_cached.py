"""The Content-Security-Policy headers built once per process (labeling.middleware) are the
ones django-csp builds per response, follow the settings, and leave a response's own policy
(a csp_* decorator) and a nonce to django-csp."""

from __future__ import annotations

from csp.constants import HEADER, HEADER_REPORT_ONLY, NONCE
from csp.decorators import csp_update
from csp.middleware import CSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from labeling.middleware import ContentSecurityPolicyMiddleware

REPORT_ONLY = {"DIRECTIVES": {"default-src": ["'self'"], "report-uri": "/csp-report/"}}


def _both(view):
    """The response of `view` through django-csp's middleware and through ours."""
    return [
        middleware(view)(RequestFactory().get("/api/v1/"))
        for middleware in (CSPMiddleware, ContentSecurityPolicyMiddleware)
    ]


def _plain(request):
    return HttpResponse("ok")


def test_cached_headers_equal_django_csps_and_follow_the_settings():
    for _ in range(2):  # built on the first response, reused on the second
        theirs, ours = _both(_plain)
        assert ours[HEADER] == theirs[HEADER]
        assert "object-src 'none'" in ours[HEADER]
        assert HEADER_REPORT_ONLY not in ours
    with override_settings(CONTENT_SECURITY_POLICY_REPORT_ONLY=REPORT_ONLY):
        theirs, ours = _both(_plain)
        assert ours[HEADER_REPORT_ONLY] == theirs[HEADER_REPORT_ONLY]
        assert "report-uri /csp-report/" in ours[HEADER_REPORT_ONLY]
    theirs, ours = _both(_plain)
    assert HEADER_REPORT_ONLY not in ours  # the override's policy is not kept


def test_a_responses_own_policy_and_a_nonce_go_through_django_csp():
    updated = csp_update({"img-src": ["https://example.org"]})(_plain)
    theirs, ours = _both(updated)
    assert "https://example.org" in ours[HEADER]
    assert ours[HEADER] == theirs[HEADER]

    def with_nonce(request):
        return HttpResponse(str(request.csp_nonce))

    with_nonces = {"DIRECTIVES": {"default-src": ["'self'"], "script-src": ["'self'", NONCE]}}
    with override_settings(CONTENT_SECURITY_POLICY=with_nonces):
        ours = _both(_plain)[1]  # the policy is cached without a nonce
        assert "script-src 'self'" in ours[HEADER] and "nonce" not in ours[HEADER]
        ours = _both(with_nonce)[1]
        assert f"script-src 'self' 'nonce-{ours.content.decode()}'" in ours[HEADER]
        assert "nonce" not in _both(_plain)[1][HEADER]  # and it did not leak into the cache
