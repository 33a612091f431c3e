# Image import pages for engineers (multi-file and zip upload, per-file report).
urlpatterns: list = []
