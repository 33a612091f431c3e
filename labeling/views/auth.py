"""Sign-in and password pages (issue 8, item 5).

The login page refuses an attempt with 429 once too many sign-ins failed for the username or
from the address (labeling/throttles.py, the same rule as the API's token endpoint), before the
password is checked. The password change page is Django's, in the app's look; a change ends the
person's other sessions (Django ties sessions to the password hash) and revokes their API token
(labeling/signals.py).
"""

from __future__ import annotations

import math

from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy
from django.utils.translation import gettext_lazy as _

from labeling.throttles import login_refused_for


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        wait = login_refused_for(request)
        if wait is not None:
            minutes = max(1, math.ceil(wait / 60))
            form = self.get_form_class()(request)  # unbound: the password is never checked
            form.initial = {"username": request.POST.get("username", "")}
            context = self.get_context_data(
                form=form,
                refused=_("Too many failed sign-ins. Wait %(minutes)d minutes and try again.")
                % {"minutes": minutes},
            )
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(math.ceil(wait))
            return response
        return super().post(request, *args, **kwargs)


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "registration/password_change.html"
    success_url = reverse_lazy("password-change-done")


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "registration/password_change_done.html"
