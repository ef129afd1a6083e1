from django.core.management.base import BaseCommand, CommandError

from inference.models import CatalogRelease, CatalogStar
from inference.services.release import ReleaseImmutableError, catalog_stars_build


class Command(BaseCommand):
    help = (
        "Build the star table (one row per star: its Flag = 1 spectra combined) of releases that have none, "
        "such as releases built before star tables existed; named draft releases are rebuilt. A published "
        "release's star table is built once from its frozen entries and never changed afterwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="Release names (default: every release without a star table).")

    def handle(self, *args, names, **options):
        if names:
            releases = list(CatalogRelease.objects.filter(name__in=names).order_by("name"))
            unknown = sorted(set(names) - {release.name for release in releases})
            if unknown:
                raise CommandError(f"unknown release(s): {', '.join(unknown)}")
        else:
            with_stars = CatalogStar.objects.values("release_id")
            releases = list(CatalogRelease.objects.exclude(pk__in=with_stars).order_by("name"))
        if not releases:
            self.stdout.write("every release has its star table")
        for release in releases:
            try:
                written = catalog_stars_build(release=release)
            except ReleaseImmutableError as error:
                self.stdout.write(f"{release.name}: skipped ({error})")
                continue
            self.stdout.write(f"{release.name} ({release.status}): {written} star rows, "
                              f"{release.good_star_count} with a Flag = 1 spectrum")
