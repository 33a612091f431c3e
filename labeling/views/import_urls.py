# Image import pages for engineers (multi-file and zip upload, per-file report), and the
# authenticated image and thumbnail URLs that every page and the API link to.
from django.urls import path

from labeling.views import imports, media

urlpatterns: list = [
    path("import/", imports.import_choose, name="import"),
    path("projects/<slug:slug>/import/", imports.project_import, name="project-import"),
    path("images/<int:pk>/file", media.image_file, name="image-file"),
    path("images/<int:pk>/thumb", media.image_thumb, name="image-thumb"),
]
