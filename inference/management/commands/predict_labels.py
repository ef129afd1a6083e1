import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from inference.models import ModelVersion
from inference.network.artifact import ArtifactError
from inference.selectors import spectra_other_preprocessing, spectra_to_predict
from inference.services.prediction import labelsets_predict


class Command(BaseCommand):
    help = (
        "Predict labels with one or more model versions for every preprocessed spectrum that lacks them "
        "(or all with --all), in batches from the array shards. Re-running never duplicates."
    )

    def add_arguments(self, parser):
        parser.add_argument("models", nargs="+", help="Model version names (e.g. the formal and the alternate).")
        parser.add_argument("--all", action="store_true", help="Predict again spectra that already have labels.")
        parser.add_argument("--chunk-size", type=int, default=4096)

    def handle(self, *args, models, all, chunk_size, **options):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        versions = list(ModelVersion.objects.filter(name__in=models))
        missing = set(models) - {v.name for v in versions}
        if missing:
            raise CommandError(f"no model version(s) {', '.join(sorted(missing))}")
        total = spectra_to_predict(model_versions=versions, only_missing=not all).count()
        try:
            with tqdm(total=total, unit="spectrum", desc="predict", file=self.stderr, disable=None) as bar:
                done = labelsets_predict(model_versions=versions, only_missing=not all, chunk_size=chunk_size,
                                         progress=bar.update)
        except ArtifactError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"predicted {done} spectra with {', '.join(v.name for v in versions)}")
        other = spectra_other_preprocessing(model_versions=versions)
        if other:
            shared = {v.preprocessing_version for v in versions}
            models = f"version {shared.pop()}" if len(shared) == 1 else "versions that differ"
            described = ", ".join(f"{n} of version {version or '(none)'}" for version, n in other.items())
            self.stdout.write(
                f"not predicted: {sum(other.values())} preprocessed spectra of another preprocessing version than "
                f"the models' ({models}): {described}; `ingest_spectra --stale` preprocesses the older ones again")
