"""What every browser test shares: Debian's Chromium, its flags, and a signed-in session.

Browsers cannot be downloaded here, so Playwright drives /usr/bin/chromium (scripts/test
installs it); the flags keep it off the network and the GPU.
"""

from __future__ import annotations

from django.test import Client

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def session_cookie(user, live_server) -> dict:
    """A session cookie for ``user`` on the live server, for ``context.add_cookies``."""
    client = Client()
    client.force_login(user)
    host = live_server.url.split("//")[1].split(":")[0]
    return {
        "name": "sessionid",
        "value": client.cookies["sessionid"].value,
        "domain": host,
        "path": "/",
    }
