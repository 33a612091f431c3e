# Engineers' project setup (create, schema and settings, members) and the export page.
# Included before the annotators' routes: "projects/create/" would otherwise be read as the
# project whose slug is "create" (a slug the services reserve for this reason).
from django.urls import path

from . import project_setup

urlpatterns = [
    path("projects/create/", project_setup.project_create_page, name="project-create"),
    path("projects/<slug:slug>/setup/", project_setup.project_setup, name="project-setup"),
    path(
        "projects/<slug:slug>/setup/members/",
        project_setup.project_members_update,
        name="project-members-update",
    ),
    path("projects/<slug:slug>/export/", project_setup.project_export, name="project-export"),
]
