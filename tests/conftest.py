import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Each test writes its files under its own temporary media root."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media"), "base_url": "/media/"},
        },
    }


@pytest.fixture(autouse=True)
def _role_groups(request):
    """Re-create the role groups for database tests.

    The 0002 data migration creates them, but a `transaction=True` test ends by flushing every
    table, so tests that run after one would otherwise find no groups.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("_django_db_helper")
    from django.contrib.auth.models import Group

    from labeling.roles import ROLE_ORDER

    for role in ROLE_ORDER:
        Group.objects.get_or_create(name=role.value)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache: throttle counters (failed sign-ins from 127.0.0.1,
    labeling/throttles.py) must not carry over from one test to the next."""
    cache.clear()
    yield
    cache.clear()
