"""The rule a webhook URL must pass (issue 9, item 15), apart from the rest of the webhooks
(labeling.services.webhooks) so the project setting's declaration (labeling.project_settings)
can use it without importing the models.

An http or https URL without credentials, whose host resolves only to public addresses: a
project's URL must not reach the cluster's own services, the cloud's metadata endpoint or the
loopback interface (server-side request forgery). IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE lifts the
address rule, for a receiver on the same host (tests, a lab). The check runs when the setting
is saved and again before every delivery, which then connects to the address it checked.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _


def _refused_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def webhook_url_check(url: str, *, resolve: bool = True) -> list[str]:
    """The addresses `url` may be sent to; ValidationError (naming webhook_url) when it is not
    an http(s) URL, carries credentials, does not resolve, or resolves to a private, loopback,
    link-local or otherwise non-public address while IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE is off.
    Every address the name resolves to is checked: a name with one public and one private
    address is refused. `resolve=False` checks only the form (an empty list back)."""

    def refuse(message: str) -> ValidationError:
        return ValidationError({"webhook_url": message})

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise refuse(_("Not a valid URL.")) from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(_("A webhook URL starts with http:// or https:// and names a host."))
    if parts.username or parts.password:
        raise refuse(_("Put no user name or password in the URL; the secret signs each call."))
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise refuse(_("The host %(host)s does not resolve.") % {"host": parts.hostname}) from error
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not settings.IMAGECLEAN_WEBHOOK_ALLOW_PRIVATE and any(map(_refused_address, addresses)):
        raise refuse(
            _(
                "%(host)s is a private, loopback or link-local address; webhooks go to public "
                "addresses only."
            )
            % {"host": parts.hostname}
        )
    return addresses
