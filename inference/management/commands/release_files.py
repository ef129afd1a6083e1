from django.core.management.base import BaseCommand, CommandError

from inference.downloads import FORMATS
from inference.models import CatalogRelease
from inference.services.release_files import (
    TABLES,
    release_files_dir,
    release_files_discard,
    release_files_list,
    release_files_write,
)


class Command(BaseCommand):
    help = (
        "Write (or list, or discard) a published release's whole-table download files, which "
        "unfiltered downloads are served from (settings RELEASE_FILES_ROOT). Workers write them "
        "when a release is published; this writes them by hand, e.g. after a failed task."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Release name.")
        parser.add_argument("--table", action="append", choices=sorted(TABLES),
                            help="A table to write (repeatable; default: every table).")
        parser.add_argument("--format", action="append", choices=sorted(FORMATS), dest="formats",
                            help="A format to write (repeatable; default: every format).")
        parser.add_argument("--list", action="store_true", help="Only list the files there are.")
        parser.add_argument("--discard", action="store_true", help="Remove the files of the tables named.")

    def handle(self, *args, name, table, formats, list, discard, **options):
        release = CatalogRelease.objects.filter(name=name).first()
        if release is None:
            raise CommandError(f"no release named {name!r}")
        tables = tuple(table or TABLES)
        if discard:
            for each in tables:
                for removed in release_files_discard(release=release, table=each):
                    self.stdout.write(f"removed {removed}")
            return
        if not list:
            try:
                release_files_write(release=release, tables=tables,
                                    formats=tuple(formats) if formats else None)
            except ValueError as error:
                raise CommandError(str(error)) from error
        self.stdout.write(f"{release_files_dir(release)}:")
        for written in release_files_list(release=release):
            self.stdout.write(f"  {written.name}  {written.rows} rows  {written.bytes} bytes  "
                              f"sha256 {written.sha256}  written {written.written}")
