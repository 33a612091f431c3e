"""The Celery application. Settings come from Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("imageclean")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _recover_jobs_of_lost_workers(sender, **kwargs) -> None:
    """A worker that (re)starts asks for the recovery sweep at once: a job whose previous
    worker process on this host is gone is re-enqueued in seconds, not at the next beat."""
    sender.app.send_task("labeling.tasks.jobs_recover")
