from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from spectra.mock.harsh import HarshOptions
from spectra.mock.labels import Isochrones
from spectra.mock.survey import MockSurveyConfig, make_mock_survey
from spectra.processing.spectrum_model import CannonSpectrumModel, SpectrumModelError


class Command(BaseCommand):
    help = (
        "Generate a mock LAMOST MRS survey with known labels: FITS files in the real layouts, a "
        "reference label catalog, APOGEE/GALAH/RAVE-like validation catalogs, and the truth."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="Directory to write (created).")
        parser.add_argument("--stars", type=int, default=500)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dr9v1-fraction", type=float, default=0.1, help="Share of files in the DR9 v1 layout.")
        parser.add_argument("--reference-fraction", type=float, default=0.6, help="Share of stars with training labels.")
        parser.add_argument("--snr-median", type=float, default=32.0, help="Median blue-arm S/N of a nightly coadd.")
        parser.add_argument("--isochrones", default=None, help="MIST isochrone CSV (default ISOCHRONE_PATH).")
        parser.add_argument("--no-ideal", action="store_true",
                            help="Skip the ideal arrays (ideal/) and the Cramer-Rao bounds (truth_crb.csv).")
        harsh = parser.add_argument_group("harsh instrument (spectra/mock/harsh.py; all off by default)")
        harsh.add_argument("--harsh", action="store_true", help="Every defect below on, at its harsh rate; single options override.")
        harsh.add_argument("--response-order", type=int, default=None, help="Instrument response with Legendre orders 5..N (harsh: 12).")
        harsh.add_argument("--cosmic-rays", type=float, default=None, help="Extra cosmic rays per arm and exposure, 80%% flagged (harsh: 24).")
        harsh.add_argument("--unflagged-cosmics", type=float, default=None,
                           help="Extra unflagged cosmic rays per arm and exposure; they leak into 2-exposure coadds (harsh: 3).")
        harsh.add_argument("--coadd-mask-dilate", type=int, default=None, help="ORMASK dilated by this many pixels (harsh: 2).")
        harsh.add_argument("--edge-junk", type=int, default=None, help="Extraction junk up to this many pixels at arm ends (harsh: 600).")
        harsh.add_argument("--sky-residuals", type=float, default=None, help="Scale of unflagged sky-line residuals (harsh: 1).")
        harsh.add_argument("--andmask-zero-flux", type=float, default=None,
                           help="Probability per coadd arm of a FLUX 0, IVAR kept pixel block (harsh: 0.5).")

    def handle(self, *args, out_dir, stars, seed, dr9v1_fraction, reference_fraction, snr_median, isochrones, **options):
        chosen = {key: options[key] for key in ("response_order", "cosmic_rays", "unflagged_cosmics", "coadd_mask_dilate",
                                                "edge_junk", "sky_residuals", "andmask_zero_flux")}
        if any(value is not None and value < 0 for value in chosen.values()):
            raise CommandError("harsh option values must not be negative")
        if chosen["andmask_zero_flux"] is not None and chosen["andmask_zero_flux"] > 1:
            raise CommandError("--andmask-zero-flux is a probability (0-1)")
        if options["harsh"]:
            harsh = HarshOptions.harsh(**chosen)
        else:
            harsh = HarshOptions(**{key: value for key, value in chosen.items() if value is not None})
        if stars < 1:
            raise CommandError("--stars must be at least 1")
        if not 0 <= dr9v1_fraction <= 1 or not 0 < reference_fraction <= 1:
            raise CommandError("fractions must lie between 0 and 1")
        isochrone_path = Path(isochrones or settings.ISOCHRONE_PATH)
        if not isochrone_path.exists():
            raise CommandError(f"isochrone table {isochrone_path} not found; pass --isochrones or set ISOCHRONE_PATH")
        try:
            model = CannonSpectrumModel.load(settings.SPECTRUM_MODEL_PATH)
        except SpectrumModelError as error:
            raise CommandError(str(error)) from error
        target = Path(out_dir)
        if target.exists() and any(target.iterdir()):
            raise CommandError(f"{target} is not empty; choose a new directory")
        config = MockSurveyConfig(
            n_stars=stars, seed=seed, dr9v1_fraction=dr9v1_fraction, reference_fraction=reference_fraction,
            snr_median=snr_median, ideal=not options["no_ideal"], harsh=harsh,
        )
        with tqdm(total=stars, unit="star", desc="mock survey", file=self.stderr, disable=None) as bar:
            summary = make_mock_survey(target, config, model, Isochrones.from_mist_csv(isochrone_path), progress=bar.update)
        self.stdout.write(
            f"{summary.stars} stars, {summary.files} files, {summary.spectra} spectra written to {summary.out_dir} "
            "(truth in truth_stars.csv / truth_spectra.csv; injected offsets in manifest.json"
            + ("; ideal arrays in ideal/, Cramer-Rao bounds in truth_crb.csv" if config.ideal else "")
            + (f"; harsh options {harsh.changed()}" if harsh.enabled else "") + ")"
        )
