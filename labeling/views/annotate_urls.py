# Log in / out, home (project list), labeling pages (single, grid), users' roles page.
from django.urls import path

from . import pages

urlpatterns = [
    path("", pages.home, name="home"),
]
