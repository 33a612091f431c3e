"""Celery tasks: thin wrappers that take primary keys and call one service.

Routing: tasks whose name starts with `labeling.tasks.ml_` go to the `ml` queue (one task per
GPU at a time); everything else goes to `default` (see CELERY_TASK_ROUTES).
"""

from __future__ import annotations

from celery import shared_task

from .services import queues


@shared_task(name="labeling.tasks.leases_expire", ignore_result=True)
def leases_expire() -> int:
    """Periodic sweep: expired leases give their slot back so the item is served again."""
    return queues.leases_expire()
