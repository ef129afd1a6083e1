from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.columns import columns_markdown


class Command(BaseCommand):
    help = "Write docs/catalog_columns.md from the column definitions in inference/columns.py."

    def handle(self, *args, **options):
        target = Path(settings.BASE_DIR) / "docs" / "catalog_columns.md"
        target.write_text(columns_markdown())
        self.stdout.write(f"wrote {target}")
