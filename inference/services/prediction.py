"""Batched prediction from the array shards, written as LabelSets in bulk.

Models are loaded lazily, once per process (``model_load``), and never at import time:
TensorFlow is not fork-safe once initialised, so a forking worker pool must load models
in its children.
"""

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from django.conf import settings
from django.utils import timezone

from core.bulk import bulk_upsert
from core.flags import LABEL_FLAGS, SPECTRUM_FLAGS
from core.labels import LABEL_ERROR_FIELDS, LABEL_FIELDS, LABELS
from core.rules import LabelRules
from spectra.array_store import ArrayStore
from spectra.models import Spectrum

from ..models import LabelSet, ModelVersion
from ..selectors import spectra_to_predict

_loaded: dict[str, object] = {}
_load_lock = threading.Lock()


def labelsets_upsert(
    *,
    model_version: ModelVersion,
    spectrum_ids: np.ndarray,
    values: np.ndarray,
    errors: np.ndarray,
    flags: np.ndarray | None = None,
    inference_seconds: float | None = None,
) -> int:
    """Write one model's labels for many spectra; re-running overwrites, never duplicates.

    ``values`` and ``errors`` are (n, 15) in ``core.labels.LABELS`` order; NaN is
    stored as NULL.
    """
    spectrum_ids = np.asarray(spectrum_ids, dtype=np.int64)
    n = spectrum_ids.shape[0]
    values = np.asarray(values, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if values.shape != (n, len(LABELS)) or errors.shape != (n, len(LABELS)):
        raise ValueError(f"values and errors must be ({n}, {len(LABELS)}), got {values.shape}, {errors.shape}")
    if flags is None:
        flags = np.zeros(n, dtype=np.int64)
    now = timezone.now()
    columns: dict = {
        "spectrum_id": spectrum_ids,
        "model_version_id": np.full(n, model_version.pk, dtype=np.int64),
        "flags": np.asarray(flags, dtype=np.int64),
        "inference_seconds": np.full(n, np.nan if inference_seconds is None else inference_seconds),
        "predicted_at": [now] * n,
    }
    for i, field in enumerate(LABEL_FIELDS):
        columns[field] = values[:, i]
    for i, field in enumerate(LABEL_ERROR_FIELDS):
        columns[field] = errors[:, i]
    return bulk_upsert(LabelSet, columns, unique_fields=["spectrum_id", "model_version_id"])


def model_load(model_version: ModelVersion):
    """The trained network of a model version (an ``SPCANet``), cached per process.

    The artifact's sha256 is checked against the registry and its preprocessing version
    against this installation's; a mismatch raises ``ArtifactError``.
    """
    with _load_lock:
        if model_version.artifact_sha256 not in _loaded:
            from spectra.processing.pipeline import PREPROCESSING_VERSION

            from ..network.artifact import artifact_read
            from ..network.estimator import SPCANet

            artifact = artifact_read(
                settings.MODEL_ARTIFACT_ROOT / model_version.artifact_uri,
                expected_sha256=model_version.artifact_sha256,
                preprocessing_version=PREPROCESSING_VERSION,
            )
            _loaded[model_version.artifact_sha256] = SPCANet.from_artifact(artifact)
        return _loaded[model_version.artifact_sha256]


def model_versions_warm(*, model_versions: list[ModelVersion], batch_size: int = 1024) -> dict[str, float]:
    """Load each model version's network into this process and run it once, so that the
    first chunk a prediction worker takes pays neither.

    A fresh process pays about 10 s before its first chunk's labels (importing TensorFlow,
    reading the artifacts, tracing the forward pass, loading the compiled masked-pixel fill;
    docs/capacity.md); a worker that warms its models when it starts (``WORKER_WARM_MODELS``,
    tasks.tasks) pays it before it takes work. The warm-up pass is ``batch_size + 1`` blank
    spectra (unit flux and ivar): a full batch, the shape of all but the last batch of a
    chunk, and a batch of one. The forward pass is compiled per batch size, so each other
    size of a chunk's last batch still costs its first use a compilation (about 0.4 s for
    the default architecture).

    Parameters
    ----------
    model_versions : list of ModelVersion
        The versions to load (``model_load``: artifact checksum and preprocessing version checked).
    batch_size : int, optional
        Spectra per forward pass, as ``SPCANet.predict`` uses them by default.

    Returns
    -------
    dict of str to float
        Seconds spent per model version name (load and warm-up pass).

    Raises
    ------
    ArtifactError
        If an artifact fails its checks (``model_load``).
    """
    from ..network.uncertainty import masked_fraction

    spent = {}
    for version in model_versions:
        started = time.perf_counter()
        network = model_load(version)
        n, pixels = batch_size + 1, network.network.pixels_per_arm
        arrays = np.ones((n, 2, 2, pixels), dtype=np.float32)
        network.predict_with_uncertainty(arrays, np.full(n, 30.0), masked_fraction(arrays[:, 1]),
                                         np.zeros(n, dtype=bool), batch_size=batch_size)
        spent[version.name] = time.perf_counter() - started
    return spent


def _chunks(queryset, chunk_size: int) -> Iterator[list[tuple]]:
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk").values_list(
            "pk", "array_shard", "array_row", "snr_blue", "snr_red", "flags", "kind")[:chunk_size])
        if not rows:
            return
        last = rows[-1][0]
        yield rows


def labelsets_predict(
    *,
    model_versions: list[ModelVersion],
    spectrum_ids: list[int] | None = None,
    id_range: tuple[int, int] | None = None,
    only_missing: bool = True,
    chunk_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Predict labels and uncertainties with each model for a set of spectra.

    Spectra are taken in chunks; each chunk's arrays are read once and given to every
    model; results are upserted on (spectrum, model version), so a re-run never
    duplicates. ``id_range`` (first, last spectrum id, inclusive) is how pipeline chunks
    name their spectra. Returns the number of spectra predicted.
    """
    networks = [(version, model_load(version)) for version in model_versions]
    store = ArrayStore(settings.SPECTRA_ARRAY_ROOT)
    queryset = spectra_to_predict(model_versions=model_versions, only_missing=only_missing)
    if spectrum_ids is not None:
        queryset = queryset.filter(pk__in=spectrum_ids)
    if id_range is not None:
        queryset = queryset.filter(pk__gte=id_range[0], pk__lte=id_range[1])
    from ..network.uncertainty import masked_fraction  # scipy: imported when predicting, not with the site

    reject = np.int64(SPECTRUM_FLAGS.reject_mask())
    outside_bit = np.int64(LABEL_FLAGS["OUTSIDE_TRAINING_RANGE"].mask)
    large_bit = np.int64(LABEL_FLAGS["LARGE_UNCERTAINTY"].mask)
    input_bit = np.int64(LABEL_FLAGS["INPUT_FLAGGED"].mask)
    done = 0
    for rows in _chunks(queryset, chunk_size):
        ids, shards, array_rows, snr_blue, snr_red, spectrum_flags, kinds = zip(*rows, strict=True)
        arrays = store.read_many(list(shards), np.asarray(array_rows))
        masked = masked_fraction(arrays[:, 1])  # the noise model's context: masked pixels and kind
        coadd = np.asarray(kinds, dtype=object) == Spectrum.Kind.COADD
        flux = arrays  # [flux, ivar]: the network fills masked pixels using the ivar
        snr = np.minimum(np.asarray(snr_blue, dtype=np.float64), np.asarray(snr_red, dtype=np.float64))
        input_flagged = (np.asarray(spectrum_flags, dtype=np.int64) & reject) != 0
        for version, network in networks:
            started = time.perf_counter()
            values, sigma, outside = network.predict_with_uncertainty(flux, snr, masked, coadd)
            seconds = (time.perf_counter() - started) / len(rows)
            large = np.any(sigma > LabelRules().large_uncertainty_factor * network.noise_model.floor, axis=1)
            flags = (np.where(outside, outside_bit, 0) | np.where(large, large_bit, 0)
                     | np.where(input_flagged, input_bit, 0)).astype(np.int64)
            labelsets_upsert(model_version=version, spectrum_ids=np.asarray(ids), values=values, errors=sigma,
                             flags=flags, inference_seconds=seconds)
        done += len(rows)
        if progress is not None:
            progress(len(rows))
    return done
