"""Sign-in and password pages (issue 8, item 5).

The login page refuses an attempt with 429 once too many sign-ins failed for the username or
from the address (labeling/throttles.py, the same rule as the API's token endpoint), before the
password is checked. The password change page is Django's, in the app's look; a change ends the
person's other sessions (Django ties sessions to the password hash) and revokes their API token
(labeling/signals.py).
"""

from __future__ import annotations

import math
from functools import wraps

from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy
from django.utils.translation import gettext_lazy as _

from labeling.throttles import login_refused_for
from labeling.views.errors import error_response

REFUSED = _("Too many failed sign-ins. Wait %(minutes)d minutes and try again.")


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        wait = login_refused_for(request)
        if wait is not None:
            minutes = max(1, math.ceil(wait / 60))
            form = self.get_form_class()(request)  # unbound: the password is never checked
            form.initial = {"username": request.POST.get("username", "")}
            context = self.get_context_data(form=form, refused=REFUSED % {"minutes": minutes})
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(math.ceil(wait))
            return response
        return super().post(request, *args, **kwargs)


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("password-change-done")


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "registration/password_change_done.html"


def login_throttled(view):
    """The same rule for another sign-in view (the admin's): a POST past the limit is a 429
    page with Retry-After, and the view never checks the password."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        wait = login_refused_for(request) if request.method == "POST" else None
        if wait is None:
            return view(request, *args, **kwargs)
        minutes = max(1, math.ceil(wait / 60))
        response = error_response(request, 429, message=REFUSED % {"minutes": minutes})
        response["Retry-After"] = str(math.ceil(wait))
        return response

    return wrapper
