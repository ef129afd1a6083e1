from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from core.flags import flags_markdown


class Command(BaseCommand):
    help = "Write docs/flags.md from the flag definitions in core/flags.py."

    def handle(self, *args, **options):
        target = Path(settings.BASE_DIR) / "docs" / "flags.md"
        target.write_text(flags_markdown())
        self.stdout.write(f"wrote {target}")
