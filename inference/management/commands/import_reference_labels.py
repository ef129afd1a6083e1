import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.services.reference import APOGEE_PAYNE_MAPPING, ReferenceImportError, reference_catalog_import


class Command(BaseCommand):
    help = (
        "Import a catalog of training labels (APOGEE-Payne-like, CSV or FITS) and match its stars to "
        "ours by Gaia source id, else by position. Re-importing updates it in place."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The reference catalog file (CSV or FITS).")
        parser.add_argument("--name", required=True, help="A short name for the catalog, e.g. apogee-payne.")
        parser.add_argument(
            "--mapping",
            help="JSON file: {id, ra, dec, gaia_source_id, labels: {teff: COLUMN, ...}, errors: {teff: COLUMN, ...}, "
                 "quality: {column, good: [...]}} (or quality_cut: a survey's documented cut, e.g. apogee_clean). "
                 "Default: the APOGEE-Payne columns.",
        )
        parser.add_argument("--show-default-mapping", action="store_true", help="Print the default mapping and exit.")

    def handle(self, *args, path, name, mapping, show_default_mapping, **options):
        if show_default_mapping:
            self.stdout.write(json.dumps(APOGEE_PAYNE_MAPPING, indent=2))
            return
        try:
            column_mapping = json.loads(Path(mapping).read_text()) if mapping else None
            summary = reference_catalog_import(name=name, path=path, mapping=column_mapping)
        except (OSError, json.JSONDecodeError, ReferenceImportError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{name}: {summary}")
