# The pool estimates page (leads and engineers; issue 10).
from django.urls import path

from . import estimates

urlpatterns: list = [
    path("projects/<slug:slug>/estimates/", estimates.project_estimates, name="project-estimates"),
]
