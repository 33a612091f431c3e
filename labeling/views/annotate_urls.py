# Log in / out, home (project list), labeling pages (single, grid), users' roles page.
from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy
from django.utils.text import format_lazy

from . import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
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
