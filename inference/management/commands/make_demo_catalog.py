from django.core.management.base import BaseCommand, CommandError

from inference.services.demo import demo_catalog_create


class Command(BaseCommand):
    help = "Create a synthetic demo catalog (stars, spectra, two synthetic models' labels, a published release)."

    def add_arguments(self, parser):
        parser.add_argument("--stars", type=int, default=2000, help="Number of stars (each gets 1-6 spectra).")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--release", default=None, help="Release name (default demo-<seed>).")

    def handle(self, *args, stars: int, seed: int, release: str | None, **options):
        if stars < 1:
            raise CommandError("--stars must be at least 1")
        try:
            demo = demo_catalog_create(n_stars=stars, seed=seed, release_name=release)
        except ValueError as error:
            raise CommandError(str(error)) from error
        r = demo.release
        self.stdout.write(
            f"Release {r.name}: {demo.stars} stars, {demo.spectra} spectra, "
            f"{r.entry_count} entries ({r.good_count} with Flag = 1), published."
        )
