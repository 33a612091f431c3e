"""Health of the parts the web app needs (issue 8, item 2): GET /health/.

`{"database": "ok" | "unavailable", "broker": "ok" | "unavailable"}`, with 200 when both answer
and 503 otherwise, for a load balancer, a supervisor or a person. Open to anyone (it says no
more than whether the app works); each check is bounded to a few seconds, and a failed database
check closes the connection so the next check, or request, starts afresh once it is back.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)
BROKER_TIMEOUT_SECONDS = 2


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except DatabaseError as exc:
        logger.warning("health: database unavailable: %s", exc)
        connection.close()
        return False


def _broker_ok() -> bool:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        return True
    except Exception as exc:  # kombu raises a transport's own errors (redis, OSError...)
        logger.warning("health: broker unavailable: %s", exc)
        return False


@never_cache
@require_safe
def health(request):
    parts = {
        "database": "ok" if _database_ok() else "unavailable",
        "broker": "ok" if _broker_ok() else "unavailable",
    }
    healthy = all(state == "ok" for state in parts.values())
    return JsonResponse(parts, status=200 if healthy else 503)
