# Engineers' and leads' pages for the active-learning loop: jobs, model versions, noise review.
from django.urls import path

from . import jobs, loop, model_compare, review
from . import models as model_pages

urlpatterns: list = [
    path("jobs/", jobs.jobs_page, name="jobs"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job-detail"),
    path("jobs/<int:pk>/cancel/", jobs.job_cancel_page, name="job-cancel"),
    path("projects/<slug:slug>/jobs/", jobs.project_jobs, name="project-jobs"),
    path("projects/<slug:slug>/jobs/start/", jobs.project_job_start, name="project-job-start"),
    path("models/", model_pages.models_index, name="models"),
    path("projects/<slug:slug>/models/", model_pages.project_models, name="project-models"),
    path(
        "projects/<slug:slug>/models/compare/",
        model_compare.project_models_compare,
        name="project-models-compare",
    ),
    path(
        "projects/<slug:slug>/models/<int:pk>/promote/",
        model_pages.model_promote,
        name="project-model-promote",
    ),
    path(
        "projects/<slug:slug>/models/rollback/",
        model_pages.model_rollback,
        name="project-model-rollback",
    ),
    path(
        "projects/<slug:slug>/models/<int:pk>/pr-curve.png",
        model_pages.model_pr_curve,
        name="project-model-pr-curve",
    ),
    # Noise review (leads), annotator quality (leads, engineers), cold start (engineers).
    path("review/", review.review_index, name="review"),
    path("projects/<slug:slug>/review/", review.project_review, name="project-review"),
    path(
        "projects/<slug:slug>/review/items/<int:pk>/resolve/",
        review.project_review_resolve,
        name="project-review-resolve",
    ),
    path(
        "projects/<slug:slug>/review/undo/", review.project_review_undo, name="project-review-undo"
    ),
    path(
        "projects/<slug:slug>/review/images/<int:pk>/gradcam.png",
        review.project_review_gradcam,
        name="project-review-gradcam",
    ),
    path("projects/<slug:slug>/quality/", review.project_quality, name="project-quality"),
    path("projects/<slug:slug>/cold-start/", review.project_cold_start, name="project-cold-start"),
    # Why each queue item is there (leads, engineers); the validation queue's refill (engineers).
    path(
        "projects/<slug:slug>/queues/<int:pk>/items/",
        loop.queue_items_page,
        name="project-queue-items",
    ),
    path(
        "projects/<slug:slug>/validation/fill/",
        loop.validation_fill,
        name="project-validation-fill",
    ),
]
