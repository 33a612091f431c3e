"""Token authentication that reads the user's roles in the same query as the token.

DRF's `TokenAuthentication` loads the token with its user (one query); `labeling.roles.user_role`
then asks for the user's groups (a second query) on every request. The labeling endpoints are
called once or twice per label, so this class reads both at once: one `Exists` per role group,
annotated onto the token query. Nothing is cached across requests: a revoked token, a
deactivated user or a changed role is seen by the very next request, as with DRF's class.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Exists, OuterRef
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from labeling.roles import ROLE_ORDER, remember_role_names


def _role_flag(role) -> str:
    return f"has_role_{role.value}"


class TokenWithRolesAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, exactly as DRF's class, in one query with the roles."""

    def authenticate_credentials(self, key):
        groups = User.groups.through.objects
        flags = {
            _role_flag(role): Exists(
                groups.filter(user_id=OuterRef("user_id"), group__name=role.value)
            )
            for role in ROLE_ORDER
        }
        try:
            token = Token.objects.select_related("user").annotate(**flags).get(key=key)
        except Token.DoesNotExist as exc:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from exc
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        remember_role_names(
            token.user, [role.value for role in ROLE_ORDER if getattr(token, _role_flag(role))]
        )
        return (token.user, token)
