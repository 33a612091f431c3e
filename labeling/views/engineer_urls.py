# Engineers' and leads' pages for the active-learning loop: jobs, model versions, noise review.
from django.urls import path

from . import jobs

urlpatterns: list = [
    path("jobs/", jobs.jobs_page, name="jobs"),
    path("jobs/<int:pk>/", jobs.job_detail, name="job-detail"),
    path("projects/<slug:slug>/jobs/", jobs.project_jobs, name="project-jobs"),
    path("projects/<slug:slug>/jobs/start/", jobs.project_job_start, name="project-job-start"),
]
