from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from vo.setup import setup_tap


class Command(BaseCommand):
    help = ("Make the TAP views of the published releases, TAP_SCHEMA and the read-only role TAP queries run as "
            "(done after every migrate; needs a database user that may create roles).")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            raise CommandError("TAP needs PostgreSQL; this database is " + connection.vendor)
        setup_tap(connection)
        self.stdout.write(self.style.SUCCESS("TAP views, TAP_SCHEMA and role ready"))
