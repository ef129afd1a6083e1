"""Train the formal and alternate networks from the catalog's spectra and reference labels.

The Django side of training: select the training spectra, load their arrays, split,
train both models with the pure core (``inference.network``), evaluate them on the held-out
test set, write the artifacts and register the model versions.
"""

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from core.labels import LABEL_FIELDS
from spectra.array_store import ArrayStore
from spectra.processing.pipeline import PREPROCESSING_VERSION

from ..models import ModelVersion, ReferenceCatalog
from ..network.config import NetworkConfig, TrainingConfig
from ..network.evaluation import accuracy_precision
from ..network.splits import TRAIN, split_two_models
from ..network.uncertainty import (
    CALIBRATION_FOLDS,
    calibration_cells,
    calibration_summary,
    cross_fitted_sigma,
    fit_noise_model,
    masked_fraction,
)
from ..selectors import TrainingSetError, training_set_select
from .reference import reference_catalog_match


@cache
def code_version() -> str:
    """The git commit of this code, or "unknown" outside a checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5, check=True)
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class TrainedModels:
    formal: ModelVersion
    alternate: ModelVersion
    training_set_size: int


def models_train(
    *,
    catalog: ReferenceCatalog,
    name_prefix: str,
    network: NetworkConfig | None = None,
    training: TrainingConfig | None = None,
    on_epoch: Callable[[str, int, dict], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> TrainedModels:
    """Train, evaluate and register the formal and alternate models.

    Both models share one held-out test set; each learns from its own training/CV split
    of the rest (``split_two_models``). Metrics (Fig. 7 accuracy and precision in S/N bins,
    uncertainty calibration) are measured on the test set and stored with each version.
    """
    from ..network.artifact import artifact_write
    from ..network.estimator import SPCANet

    network = network or NetworkConfig()
    training = training or TrainingConfig()
    for role in ModelVersion.Role:
        if ModelVersion.objects.filter(name=f"{name_prefix}-{role.value}").exists():
            raise ValueError(f"model version {name_prefix}-{role.value} exists; choose another name prefix")
    match = reference_catalog_match(catalog=catalog)
    log(f"reference catalog {catalog.name}: {match}")
    data = training_set_select(catalog=catalog)
    groups = data.star_ids if training.split_by == "star" else np.arange(len(data), dtype=np.int64)
    split = split_two_models(groups, training.split_fractions, training.seed)
    if np.sum(split.test) < 2 or np.sum(split.formal == TRAIN) < 2:
        raise TrainingSetError(f"{len(data)} usable spectra are too few to split 6:2:1")
    log(f"training set: {len(data)} spectra of {np.unique(data.star_ids).size} stars; "
        f"test {int(split.test.sum())} spectra (split by {training.split_by})")
    without_errors = [name for k, name in enumerate(LABEL_FIELDS) if not np.isfinite(data.label_errors[:, k]).any()]
    if without_errors:
        log(f"no reference errors for {', '.join(without_errors)}: their uncertainties keep the reference's own "
            f"error (import the catalog with its error columns to take it out)")
    arrays = ArrayStore(settings.SPECTRA_ARRAY_ROOT).read_many(data.shards, data.rows)
    masked = masked_fraction(arrays[:, 1])  # the noise model's context, with data.coadd
    flux = arrays  # [flux, ivar]: the network fills masked pixels using the ivar
    versions = {}
    for offset, (role, codes) in enumerate(((ModelVersion.Role.FORMAL, split.formal),
                                             (ModelVersion.Role.ALTERNATE, split.alternate))):
        train, cv, test = codes == TRAIN, ~split.test & (codes != TRAIN), split.test
        role_training = TrainingConfig.from_mapping({**training.as_dict(), "seed": training.seed + offset})
        estimator = SPCANet(network, role_training, LABEL_FIELDS)
        log(f"{role.value}: training on {int(train.sum())} spectra, early stopping on {int(cv.sum())}")
        estimator.fit(flux[train], data.labels[train], cv_flux=flux[cv], cv_labels=data.labels[cv],
                      on_epoch=None if on_epoch is None else (lambda epoch, logs, r=role.value: on_epoch(r, epoch, logs)))
        # The noise model is fitted on every spectrum this model did not learn from (its CV
        # set and the shared test set); the test set's uncertainties for the calibration check
        # are cross-fitted, each from a model fitted without its star.
        held = ~train
        held_predicted = estimator.predict(flux[held])
        calibration = (held_predicted - data.labels[held], data.snr[held], masked[held], data.coadd[held],
                       data.label_errors[held])
        estimator.noise_model = fit_noise_model(*calibration, groups=data.star_ids[held])
        scored = test[held]
        sigma = cross_fitted_sigma(*calibration, groups=data.star_ids[held], scored=scored,
                                   folds=CALIBRATION_FOLDS, seed=role_training.seed)
        predicted = held_predicted[scored]
        metrics = accuracy_precision(predicted, data.labels[test], data.snr[test], LABEL_FIELDS)
        # Checked against the reference labels: each z is divided by the uncertainty and the
        # reference's own error (where it gives one) in quadrature.
        test_errors = data.label_errors[test]
        against_reference = np.hypot(sigma, np.where(np.isfinite(test_errors), test_errors, 0.0))
        metrics["calibration"] = calibration_summary(predicted, data.labels[test], against_reference, LABEL_FIELDS)
        metrics["calibration_cells"] = calibration_cells(predicted, data.labels[test], against_reference,
                                                         data.snr[test], masked[test], data.coadd[test], LABEL_FIELDS,
                                                         groups=data.star_ids[test], seed=role_training.seed)
        metrics["reference_errors"] = [name for k, name in enumerate(LABEL_FIELDS)
                                       if np.isfinite(data.label_errors[:, k]).any()]
        metrics["uncertainty"] = estimator.noise_model.as_dict()
        metrics["calibration_set"] = {"cv": int(cv.sum()), "test": int(test.sum()),
                                      "stars": int(np.unique(data.star_ids[held]).size),
                                      "check": f"test set, cross-fitted over {CALIBRATION_FOLDS} folds of its stars"}
        metrics["training"] = {key: value for key, value in estimator.history.items()
                               if key not in ("loss", "val_loss", "learning_rate")}
        metrics["training"]["n_test"] = int(test.sum())
        metrics["loss_history"] = {key: estimator.history[key] for key in ("loss", "val_loss", "learning_rate")}
        training_set_hash = data.content_hash(codes)
        artifact = estimator.to_artifact(
            role=role.value, training_set_hash=training_set_hash, preprocessing_version=PREPROCESSING_VERSION,
            code_version=code_version(), reference_catalog=catalog.name, reference_sha256=catalog.source_sha256,
        )
        relative, sha256 = artifact_write(settings.MODEL_ARTIFACT_ROOT, artifact)
        with transaction.atomic():
            versions[role] = ModelVersion.objects.create(
                name=f"{name_prefix}-{role.value}", role=role, artifact_uri=relative, artifact_sha256=sha256,
                config={"network": network.as_dict(), "training": role_training.as_dict()},
                training_set_hash=training_set_hash, metrics=metrics, code_version=code_version(),
                preprocessing_version=PREPROCESSING_VERSION, reference_catalog=catalog,
            )
        log(f"{role.value}: {estimator.history['epochs']} epochs in {estimator.history['seconds']:.1f} s; "
            f"artifact {relative}")
    return TrainedModels(formal=versions[ModelVersion.Role.FORMAL], alternate=versions[ModelVersion.Role.ALTERNATE],
                         training_set_size=len(data))
