import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from validation.formats import SURVEY_FORMATS, SurveyFormatError
from validation.services import reference_survey_import


class Command(BaseCommand):
    help = (
        "Import another survey's catalog for validation (APOGEE allStar, GALAH, RAVE, or any catalog "
        "described by a column mapping), apply its quality cut and match its stars to ours."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="The catalog file (FITS, or CSV).")
        parser.add_argument("--name", required=True, help="A short name, e.g. apogee-dr17.")
        parser.add_argument("--format", dest="format_name", choices=sorted(SURVEY_FORMATS),
                            help="A known public format.")
        parser.add_argument("--mapping", help="JSON file: survey, id_column, ra_column, dec_column, gaia_column, "
                                              "labels {field: [column, direct|x_h|x_fe]}, flag_columns, quality_cut.")

    def handle(self, *args, path, name, format_name, mapping, **options):
        try:
            column_mapping = json.loads(Path(mapping).read_text()) if mapping else None
            survey = reference_survey_import(name=name, path=path, format_name=format_name, mapping=column_mapping)
        except (OSError, json.JSONDecodeError, SurveyFormatError) as error:
            raise CommandError(str(error)) from error
        line = (f"{survey.name}: {survey.row_count} stars, {survey.clean_count} pass {survey.quality_cut}, "
                f"{survey.matched_count} matched to our stars")
        if survey.duplicate_count:
            line += f"; {survey.duplicate_count} rows repeating a star dropped ({survey.import_notes['duplicate_rule']})"
        self.stdout.write(line)
