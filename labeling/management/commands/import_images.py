"""`manage.py import_images PROJECT_SLUG PATH [--zip] [--no-queue]`: import a server-side folder
(recursively) or a zip archive, print one line per file and a summary."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.services.imports import images_import_folder, images_import_zip


class Command(BaseCommand):
    help = "Import the images of a folder (recursively) or of a zip archive into a project."

    def add_arguments(self, parser):
        parser.add_argument("project_slug")
        parser.add_argument("path", help="A folder, or a zip archive with --zip.")
        parser.add_argument("--zip", action="store_true", help="PATH is a zip archive.")
        parser.add_argument(
            "--no-queue",
            action="store_true",
            help="Do not add the new images to the project's labeling queue.",
        )
        parser.add_argument(
            "--no-recursive", action="store_true", help="Only the folder's own files."
        )

    def handle(self, *args, project_slug, path, zip, no_queue, no_recursive, **options):
        try:
            project = Project.objects.get(slug=project_slug)
        except Project.DoesNotExist:
            raise CommandError(f"No project with slug {project_slug!r}.") from None
        if zip:
            try:
                with open(path, "rb") as handle:
                    report = images_import_zip(
                        project=project, zip_file=handle, add_to_queue=not no_queue
                    )
            except OSError as exc:
                raise CommandError(f"Cannot open {path}: {exc.strerror}.") from None
        else:
            report = images_import_folder(
                project=project, path=path, recursive=not no_recursive, add_to_queue=not no_queue
            )
        for entry in report.entries:
            line = f"{entry.name}\t{entry.status}"
            if entry.reason:
                line += f"\t{entry.reason}"
            self.stdout.write(line)
        for error in report.archive_errors:
            self.stderr.write(error)
        self.stdout.write(report.summary())
        if report.archive_errors:
            raise CommandError("The archive or folder could not be read; see above.")
