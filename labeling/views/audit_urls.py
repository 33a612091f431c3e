# The engineers' audit log page (labeling/views/audit.py); its API is labeling/api/audit_urls.py.
from django.urls import path

from . import audit

urlpatterns = [
    path("audit/", audit.audit_page, name="audit"),
]
