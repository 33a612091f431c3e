# The project's webhooks page (engineers): labeling/views/webhooks.py.
from django.urls import path

from . import webhooks

urlpatterns: list = [
    path("projects/<slug:slug>/webhooks/", webhooks.project_webhooks, name="project-webhooks"),
    path(
        "projects/<slug:slug>/webhooks/save/",
        webhooks.project_webhooks_save,
        name="project-webhooks-save",
    ),
    path(
        "projects/<slug:slug>/webhooks/ping/",
        webhooks.project_webhooks_ping,
        name="project-webhooks-ping",
    ),
    path(
        "projects/<slug:slug>/webhooks/rotate/",
        webhooks.project_webhooks_rotate,
        name="project-webhooks-rotate",
    ),
]
