# Log in / out, password change, home (project list), labeling pages, users' roles page.
from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy
from django.utils.text import format_lazy

from . import auth, pages

urlpatterns = [
    path("", pages.home, name="home"),
    # Failed sign-ins are throttled per account and per address (labeling/throttles.py).
    path("login/", auth.LoginView.as_view(), name="login"),
    path("password/", auth.PasswordChangeView.as_view(), name="password-change"),
    path("password/done/", auth.PasswordChangeDoneView.as_view(), name="password-change-done"),
    # POST only (Django 5); the login page then says the person is signed out.
    path(
        "logout/",
        auth_views.LogoutView.as_view(
            next_page=format_lazy("{}?signed_out=1", reverse_lazy("login"))
        ),
        name="logout",
    ),
    path("projects/<slug:slug>/", pages.project_detail, name="project-detail"),
    path("projects/<slug:slug>/queues/<int:pk>/label/", pages.annotate, name="queue-annotate"),
    path("projects/<slug:slug>/queues/<int:pk>/grid/", pages.grid, name="queue-grid"),
]
