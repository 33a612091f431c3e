# Before anything loads torch: OpenMP threads sleep while they wait instead of spinning on
# shared cores (mlcore.runtime says why; it must run before libgomp reads its environment).
from mlcore.runtime import openmp_defaults

openmp_defaults()

# Load the Celery app whenever Django starts so that @shared_task binds to it.
from .celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
