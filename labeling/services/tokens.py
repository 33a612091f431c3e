"""API tokens: issued on sign-in, expiring, listed and revoked (issue 8, item 5).

A token is DRF's `authtoken.Token`, one per person. It expires `IMAGECLEAN_TOKEN_TTL_SECONDS`
after it was issued (0: never); `labeling.api.authentication` refuses an expired token, and
asking for a token again replaces an expired one with a new key. The owner and engineers can
list and revoke tokens; a password change and a deactivation revoke the person's token
(labeling/signals.py, so the admin, `manage.py changepassword` and every service are covered).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.authtoken.models import Token

from labeling.permissions import can_manage_people, can_manage_token_of


def token_ttl() -> timedelta | None:
    seconds = settings.IMAGECLEAN_TOKEN_TTL_SECONDS
    return timedelta(seconds=seconds) if seconds > 0 else None


def token_expires_at(created: datetime) -> datetime | None:
    ttl = token_ttl()
    return created + ttl if ttl else None


def token_is_expired(created: datetime, *, now: datetime | None = None) -> bool:
    expires = token_expires_at(created)
    return expires is not None and (now or timezone.now()) >= expires


@transaction.atomic
def token_issue(*, user: User) -> Token:
    """The person's token; a new key when they had none or theirs expired."""
    token = Token.objects.select_for_update().filter(user=user).first()
    if token is not None and token_is_expired(token.created):
        token.delete()
        token = None
    if token is None:
        token = Token.objects.create(user=user)
    return token


def tokens_visible_to(user: User) -> QuerySet[Token]:
    """Site-wide engineers see every token; anyone else only their own (labeling.permissions)."""
    tokens = Token.objects.select_related("user").order_by("user__username")
    if can_manage_people(user):
        return tokens
    return tokens.filter(user=user)


def tokens_revoke(*, user: User, by: User) -> int:
    """Revoke `user`'s token (the person themselves, or a site-wide engineer); how many were
    deleted."""
    if not can_manage_token_of(by, user):
        raise PermissionDenied(_("Only the owner or an engineer may revoke a token."))
    deleted, _rows = Token.objects.filter(user=user).delete()
    return deleted


def tokens_revoke_all_of(*, user_id: int) -> None:
    """Used when the person's credentials change: no check, the caller is the change itself."""
    Token.objects.filter(user_id=user_id).delete()


@transaction.atomic
def user_password_change(*, user: User, old_password: str, new_password: str) -> User:
    """The person changes their own password: the old one must match, the new one passes the
    validators (AUTH_PASSWORD_VALIDATORS). Their token is revoked (labeling/signals.py)."""
    if not user.check_password(old_password):
        raise ValidationError({"old_password": [_("Your current password is not correct.")]})
    try:
        validate_password(new_password, user)
    except ValidationError as exc:
        raise ValidationError({"new_password": exc.messages}) from exc
    user.set_password(new_password)
    user.save(update_fields=["password"])
    return user
