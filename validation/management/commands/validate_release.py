from django.core.management.base import BaseCommand, CommandError

from core.labels import LABELS
from inference.models import CatalogRelease
from validation.models import ReferenceSurvey
from validation.services import release_validate


class Command(BaseCommand):
    help = "Validate a release against every imported survey (or those named) and print the Table-1-like result."

    def add_arguments(self, parser):
        parser.add_argument("release")
        parser.add_argument("--survey", action="append", dest="surveys", help="Only this survey (repeatable).")
        parser.add_argument("--no-quality-cut", action="store_true", help="Keep the surveys' flagged stars.")
        parser.add_argument("--include-flagged", action="store_true", help="Compare Flag = 0 rows too.")

    def handle(self, *args, release, surveys, no_quality_cut, include_flagged, **options):
        try:
            release_row = CatalogRelease.objects.get(name=release)
        except CatalogRelease.DoesNotExist as error:
            raise CommandError(f"no release {release!r}") from error
        chosen = ReferenceSurvey.objects.all()
        if surveys:
            chosen = chosen.filter(name__in=surveys)
            missing = set(surveys) - set(chosen.values_list("name", flat=True))
            if missing:
                raise CommandError(f"no survey(s) {', '.join(sorted(missing))}")
        chosen = list(chosen)
        if not chosen:
            raise CommandError("no reference survey imported: use import_reference_survey")
        results = release_validate(release=release_row, surveys=chosen, apply_quality_cuts=not no_quality_cut,
                                   good_only=not include_flagged)
        by_key = {(r.label, r.survey.name): r for r in results}
        names = [s.name for s in chosen]
        self.stdout.write(f"{release} minus reference: bias / sigma (stars / spectra)")
        self.stdout.write(f"{'label':<8}" + "".join(f"{n:>34}" for n in names))
        for label in LABELS:
            cells = []
            for name in names:
                r = by_key.get((label.field, name))
                cells.append(f"{r.bias:+.4g} / {r.scatter:.4g} ({r.n_stars}/{r.n_spectra})" if r else "-")
            if any(c != "-" for c in cells):
                self.stdout.write(f"{label.column:<8}" + "".join(f"{c:>34}" for c in cells))
