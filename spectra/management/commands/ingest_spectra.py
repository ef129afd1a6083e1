from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from spectra.array_store import ArrayStoreError
from spectra.processing.spectrum_model import SpectrumModelError
from spectra.services.ingest import (
    IngestSummary,
    rv_catalog_read,
    spectra_ingest,
    spectra_stale_batches,
    spectra_stale_versions,
    spectrum_files,
)
from spectra.spectrum_model_files import rv_templates_load


def read_rv_catalog(path: Path) -> dict:
    try:
        return rv_catalog_read(path)
    except ValueError as error:
        raise CommandError(str(error)) from error


class Command(BaseCommand):
    help = (
        "Ingest LAMOST MRS files: files, directory trees, or a list file. Bad files are "
        "recorded (admin: Source files) and the rest goes on; re-ingesting changes nothing, except "
        "that spectra an older preprocessing version made are preprocessed again."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", help="Files or directories (searched recursively).")
        parser.add_argument("--list", dest="list_file", help="A text file with one path per line.")
        parser.add_argument(
            "--stale", action="store_true",
            help="Also the files of every stored spectrum an older preprocessing version made (models read only "
                 "their own version), from the paths recorded when they were ingested, even those this version read "
                 "before and whose result was worse (tried again); the RVs those spectra took from an input catalog "
                 "are used again unless --rv-catalog gives others.")
        parser.add_argument("--rv-catalog", help="CSV of catalog RVs: obsid, rv_blue, rv_red[, lmjm].")
        parser.add_argument("--no-rv-measurement", action="store_true", help="Do not cross-correlate arms without a catalog RV.")
        parser.add_argument("--batch-files", type=int, default=32, help="Files preprocessed together.")

    def handle(self, *args, paths, list_file, stale, rv_catalog, no_rv_measurement, batch_files, **options):
        inputs = list(paths)
        if list_file:
            inputs += [line.strip() for line in Path(list_file).read_text().splitlines() if line.strip()]
        catalog = read_rv_catalog(Path(rv_catalog)) if rv_catalog else None
        if stale:
            versions = spectra_stale_versions()
            described = ", ".join(f"{n} of version {v or '(none)'}" for v, n in versions.items())
            self.stdout.write(f"older preprocessing: {sum(versions.values())} spectra ({described or 'none'})")
            if not inputs and not versions:
                return
        if not inputs and not stale:
            raise CommandError("give files, directories, --list or --stale")
        templates = None
        if not no_rv_measurement:
            try:
                templates = rv_templates_load()
            except SpectrumModelError as error:
                raise CommandError(f"{error} (or pass --rv-catalog with --no-rv-measurement)") from error
        summary = IngestSummary()
        with tqdm(total=sum(1 for _ in spectrum_files(inputs)), unit="file", desc="ingest", file=self.stderr,
                  disable=None) as bar:
            try:
                if inputs:
                    summary.add(spectra_ingest(paths=inputs, rv_catalog=catalog, templates=templates,
                                               batch_files=batch_files, progress=bar.update))
                for batch in spectra_stale_batches() if stale else ():
                    bar.total += len(batch.paths)
                    bar.refresh()
                    given = {obsid for obsid, _ in catalog or {}}  # (a given RV, even for every LMJM, wins)
                    merged = {**{k: v for k, v in batch.rv_catalog.items() if k[0] not in given}, **(catalog or {})}
                    summary.add(spectra_ingest(paths=batch.paths, rv_catalog=merged, templates=templates,
                                               batch_files=batch_files, progress=bar.update, reread=True))
            except ArrayStoreError as error:
                raise CommandError(f"ingest stopped: {error}; files written so far are kept, run again to go on") from error
        for line in summary.lines():
            self.stdout.write(line)
        if no_rv_measurement and summary.stale_kept_results["flag RV_UNRELIABLE"]:
            self.stdout.write(
                "  (without RV measurement, a spectrum whose RV is in no catalog is not preprocessed: give its "
                "RVs with --rv-catalog, or run without --no-rv-measurement)")
