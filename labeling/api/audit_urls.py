from django.urls import path

from . import audit_views as v

urlpatterns = [
    path("audit/", v.AuditEventListApi.as_view(), name="api-audit-list"),
    path("audit/export/", v.AuditExportApi.as_view(), name="api-audit-export"),
]
