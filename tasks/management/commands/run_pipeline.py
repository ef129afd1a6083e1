import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from inference.models import ModelVersion
from tasks.models import ProcessingRun
from tasks.reconcile import processing_runs_reconcile
from tasks.selectors import duration_text, processing_run_progress, progress_lines
from tasks.services import (
    RunConfigurationError,
    processing_run_cancel,
    processing_run_create,
    processing_run_retry_failed,
    processing_run_start,
)


class Command(BaseCommand):
    PROGRESS_LINE_SECONDS = 30.0
    help = (
        "Run the survey pipeline (ingest -> predict with both models -> build a release) on the Celery "
        "workers, or in-process on the embedded default, and follow its progress. Also: --follow, --cancel "
        "and --retry-failed for an existing run."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", help="Files or directories to ingest.")
        parser.add_argument("--stages", default="ingest,predict,release", help="Comma-separated subset, in order.")
        parser.add_argument("--formal", help="Formal model version name.")
        parser.add_argument("--alternate", help="Alternate model version name.")
        parser.add_argument("--release", default="", help="Release to build (or extend) at the end.")
        parser.add_argument("--publish", action="store_true", help="Publish the release when built.")
        parser.add_argument("--publish-partial", action="store_true",
                            help="Publish even when chunks of earlier stages failed (default: build it, do not publish).")
        parser.add_argument("--rv-catalog", default="", help="CSV of catalog RVs (obsid, rv_blue, rv_red[, lmjm]).")
        parser.add_argument("--no-rv-measurement", action="store_true")
        parser.add_argument("--chunk-files", type=int, default=None, help="Files per ingest chunk (default: the run model's).")
        parser.add_argument("--chunk-spectra", type=int, default=None, help="Spectra per prediction chunk (default: the run model's).")
        parser.add_argument("--name", default="")
        parser.add_argument("--no-wait", action="store_true", help="Start and return; follow later with --follow.")
        parser.add_argument("--follow", type=int, metavar="RUN", help="Follow an existing run.")
        parser.add_argument("--cancel", type=int, metavar="RUN")
        parser.add_argument("--retry-failed", type=int, metavar="RUN")

    def handle(self, *args, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            if options["cancel"]:
                run = self._run(options["cancel"])
                self.stdout.write(f"run {run.pk} cancelled; {processing_run_cancel(run=run)} queued chunks skipped")
                return
            if options["retry_failed"]:
                run = self._run(options["retry_failed"])
                self.stdout.write(f"run {run.pk}: {processing_run_retry_failed(run=run)} failed chunks queued again")
            elif options["follow"]:
                run = self._run(options["follow"])
            else:
                run = self._create(options)
                self.stdout.write(f"run {run.pk} started ({', '.join(run.stages)})")
                processing_run_start(run=run)
        except RunConfigurationError as error:
            raise CommandError(str(error)) from error
        if not options["no_wait"]:
            self._follow(run)

    def _run(self, pk: int) -> ProcessingRun:
        try:
            return ProcessingRun.objects.get(pk=pk)
        except ProcessingRun.DoesNotExist as error:
            raise CommandError(f"no run {pk}") from error

    def _create(self, options) -> ProcessingRun:
        models = {}
        for role in ("formal", "alternate"):
            if options[role]:
                try:
                    models[role] = ModelVersion.objects.get(name=options[role])
                except ModelVersion.DoesNotExist as error:
                    raise CommandError(f"no model version {options[role]!r}") from error
        return processing_run_create(
            stages=[s.strip() for s in options["stages"].split(",") if s.strip()], paths=options["paths"],
            rv_catalog_path=options["rv_catalog"], measure_rv=not options["no_rv_measurement"],
            formal_model=models.get("formal"), alternate_model=models.get("alternate"),
            release_name=options["release"], publish=options["publish"], publish_partial=options["publish_partial"],
            chunk_files=options["chunk_files"],
            chunk_spectra=options["chunk_spectra"], name=options["name"],
        )

    def _follow(self, run: ProcessingRun) -> None:
        """Poll the run's chunks in the database: the bar follows the workers, wherever they are.

        The bar counts the current stage in its unit (files, spectra) with the rate measured
        from the chunks done and the ETA; without a terminal (a log file) the same line is
        written every PROGRESS_LINE_SECONDS and whenever the stage changes.
        """
        bar = tqdm(unit="chunk", desc=f"run {run.pk}", file=self.stderr, disable=None,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}")
        next_reconcile = time.monotonic() + settings.PIPELINE_RECONCILE_SECONDS
        last_line, last_stage = 0.0, None
        while True:
            run.refresh_from_db()
            progress = processing_run_progress(run=run)
            stage = progress["stages"].get(run.current_stage)
            if stage is not None and not run.is_finished:
                if bar.disable and (run.current_stage != last_stage
                                    or time.monotonic() - last_line >= self.PROGRESS_LINE_SECONDS):
                    self.stdout.write(f"run {run.pk} {progress_lines({**progress, 'stages': {run.current_stage: stage}})[0]}")
                    last_line, last_stage = time.monotonic(), run.current_stage
                bar.set_description_str(f"run {run.pk} {run.current_stage}", refresh=False)
                bar.unit = stage["unit"]
                bar.total = stage["units_total"]
                bar.n = stage["units_done"] + stage["units_failed"]
                rate = f"{stage['rate']:,.1f} {stage['unit']}/s" if stage["rate"] is not None else "rate ?"
                bar.set_postfix_str(f"{rate}, ETA {duration_text(stage['eta_seconds'])}, "
                                    f"{progress['chunks']['failed']} chunks failed", refresh=False)
                bar.refresh()
            if run.is_finished:
                break
            if time.monotonic() >= next_reconcile:  # heal lost workers and messages while waiting
                processing_runs_reconcile()
                next_reconcile = time.monotonic() + settings.PIPELINE_RECONCILE_SECONDS
            time.sleep(1.0)
        bar.close()
        self.stdout.write(f"run {run.pk}: {run.state}" + (f" ({run.reason})" if run.reason else "")
                          + (f" after {duration_text(progress['elapsed_seconds'])}"
                             if progress["elapsed_seconds"] is not None else ""))
        for (stage, counts), line in zip(progress["stages"].items(), progress_lines(progress), strict=True):
            self.stdout.write(
                f"  {stage}: {counts['done']} chunks done, {counts['failed']} failed, {counts['skipped']} skipped; "
                f"{counts['spectra'] or 0} spectra"
                + (f"; {counts['files_unchanged']} files unchanged, {counts['files_failed']} files failed"
                   if stage == "ingest" else ""))
            self.stdout.write(f"    {line}")
        for chunk in run.chunks.filter(state="failed")[:20]:
            self.stdout.write(f"  failed {chunk.stage} chunk {chunk.index}: {chunk.error}")
