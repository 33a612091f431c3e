"""Receivers that keep credentials honest whichever code path changes them (issue 8, item 5).

- A failed sign-in (Django's `user_login_failed`, sent by `authenticate()` from the login page,
  the token endpoint and the admin) counts against the username and the client's address
  (labeling/throttles.py).
- A label of triage's audit sample queues triage's pause rule (labeling.services.triage), from
  whichever path labels it (the queue API, the grid's batch, a lead's correction).
- A changed password or a deactivation revokes the person's API token, whether it came from a
  service, the admin, `manage.py changepassword` or a shell. Sessions need nothing here: Django
  ties each session to the password hash, so other sessions end with a password change.

Connected in `LabelingConfig.ready()`.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_save, pre_save

from labeling.services.tokens import tokens_revoke_all_of
from labeling.throttles import login_failure_record

_CREDENTIAL_FIELDS = {"password", "is_active"}


def _login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    if request is None:
        return  # authenticate() called outside a request (a script): nothing to throttle
    login_failure_record(request=request, username=(credentials or {}).get("username") or "")


def _note_credential_change(sender, instance: User, raw=False, update_fields=None, **kwargs):
    if raw or instance.pk is None:
        return
    if update_fields is not None and not _CREDENTIAL_FIELDS & set(update_fields):
        return  # e.g. last_login on every sign-in: no extra query
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    instance._revoke_tokens = before["password"] != instance.password or (
        before["is_active"] and not instance.is_active
    )


def _revoke_on_credential_change(sender, instance: User, created=False, **kwargs):
    if getattr(instance, "_revoke_tokens", False):
        instance._revoke_tokens = False
        tokens_revoke_all_of(user_id=instance.pk)


def _triage_audit_label(sender, instance, created=False, raw=False, **kwargs) -> None:
    """A label of triage's audit sample queues the pause rule's check (on commit)."""
    if created and not raw:
        from labeling.services.triage import triage_after_label

        triage_after_label(label=instance)


def connect() -> None:
    from labeling.models import Label

    post_save.connect(_triage_audit_label, sender=Label, dispatch_uid="imageclean-triage-label")
    user_login_failed.connect(_login_failed, dispatch_uid="imageclean-login-failed")
    pre_save.connect(_note_credential_change, sender=User, dispatch_uid="imageclean-cred-pre")
    post_save.connect(_revoke_on_credential_change, sender=User, dispatch_uid="imageclean-cred")
