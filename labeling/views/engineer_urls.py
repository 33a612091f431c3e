# Engineers' and leads' pages for the active-learning loop: jobs, model versions, noise review.
urlpatterns: list = []
