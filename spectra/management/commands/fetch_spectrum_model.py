from django.core.management.base import BaseCommand, CommandError

from spectra.processing.spectrum_model import SpectrumModelError
from spectra.spectrum_model_files import spectrum_model_fetch


class Command(BaseCommand):
    help = "Fetch the Cannon spectrum model (RV templates, mock survey) into SPECTRUM_MODEL_PATH."

    def handle(self, *args, **options):
        try:
            path = spectrum_model_fetch()
        except (SpectrumModelError, OSError) as error:
            raise CommandError(str(error)) from error
        except Exception as error:  # pip failures surface as CalledProcessError
            raise CommandError(f"could not fetch the spectrum model: {error}") from error
        self.stdout.write(f"spectrum model ready at {path}")
