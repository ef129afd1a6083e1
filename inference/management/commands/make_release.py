from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from inference.models import LabelSet, ModelVersion
from inference.selectors import release_flag_counts
from inference.services.release import (
    ReleaseImmutableError,
    catalog_release_build,
    catalog_release_get_or_create,
    catalog_release_publish,
)


class Command(BaseCommand):
    help = (
        "Build a catalog release from the formal and alternate models' label sets with the catalog rules "
        "(settings CATALOG_*), and optionally publish it (published releases never change)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Release name, e.g. dr7-v1.")
        parser.add_argument("--formal", required=True, help="Formal model version name.")
        parser.add_argument("--alternate", required=True, help="Alternate model version name.")
        parser.add_argument("--description", default="")
        parser.add_argument("--publish", action="store_true", help="Publish the release after building it.")

    def handle(self, *args, name, formal, alternate, description, publish, **options):
        try:
            formal_model = ModelVersion.objects.get(name=formal)
            alternate_model = ModelVersion.objects.get(name=alternate)
        except ModelVersion.DoesNotExist as error:
            raise CommandError(f"unknown model version: {error}") from error
        try:
            release = catalog_release_get_or_create(name=name, formal_model=formal_model,
                                                    alternate_model=alternate_model, description=description)
            total = LabelSet.objects.filter(model_version=formal_model).count()
            with tqdm(total=total, unit="row", desc="release", file=self.stderr, disable=None) as bar:
                catalog_release_build(release=release, progress=bar.update)
            if publish:
                release = catalog_release_publish(release=release)
        except (ReleaseImmutableError, ValueError) as error:
            raise CommandError(str(error)) from error
        counts = release_flag_counts(release=release)
        self.stdout.write(f"release {release.name} ({release.status}): {release.entry_count} entries, "
                          f"{release.good_count} with Flag = 1")
        for flag_name, count in counts.items():
            self.stdout.write(f"  {flag_name}: {count}")
