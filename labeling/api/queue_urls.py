# Labeling: next item, submit, skip, undo, batch (grid) submit, own throughput.
urlpatterns: list = []
