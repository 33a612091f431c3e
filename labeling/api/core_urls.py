# Projects, images, label history, export/import, users' roles, schema and docs.
urlpatterns: list = []
