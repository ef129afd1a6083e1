from django.conf import settings
from django.core.management.base import BaseCommand

from spectra.services.star_identity import stars_merge_duplicates


class Command(BaseCommand):
    help = (
        "Merge stars closer than STAR_MATCH_RADIUS_ARCSEC into the oldest of them (a catalog "
        "ingested before star identity was locked can hold duplicates): spectra and "
        "reference-survey matches move to the kept star."
    )

    def add_arguments(self, parser):
        parser.add_argument("--radius-arcsec", type=float, default=None, help="Default: STAR_MATCH_RADIUS_ARCSEC.")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be merged; change nothing.")

    def handle(self, *args, radius_arcsec, dry_run, **options):
        radius = radius_arcsec if radius_arcsec is not None else settings.STAR_MATCH_RADIUS_ARCSEC
        summary = stars_merge_duplicates(radius_arcsec=radius, dry_run=dry_run)
        verb = "would merge" if dry_run else "merged"
        self.stdout.write(
            f"{verb} {summary['stars_removed']} duplicate stars into {summary['groups']} "
            f"({summary['spectra_moved']} spectra {'to move' if dry_run else 'moved'}; radius {radius:g} arcsec)"
        )
