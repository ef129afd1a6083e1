"""Fetching the spectrum model file (a registry package's data file) and loading templates."""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings

from .processing.rv import TemplateBank
from .processing.spectrum_model import (
    MODEL_MEMBER,
    THEDOPPLER_VERSION,
    CannonSpectrumModel,
    SpectrumModelError,
    template_bank_from_model,
)


def spectrum_model_fetch(*, destination: Path | None = None) -> Path:
    """Download the ``thedoppler`` wheel from the package index (without installing it or
    its dependencies, which need numpy < 2) and extract the model pickle, verified."""
    destination = Path(destination or settings.SPECTRUM_MODEL_PATH)
    if destination.exists():
        CannonSpectrumModel.load(destination)  # verifies the checksum
        return destination
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
             f"thedoppler=={THEDOPPLER_VERSION}", "-d", folder],
            check=True,
        )
        wheel = next(Path(folder).glob("thedoppler-*.whl"))
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as archive, archive.open(MODEL_MEMBER) as member:
            partial.write_bytes(member.read())
    partial.replace(destination)
    try:
        CannonSpectrumModel.load(destination)
    except SpectrumModelError:
        destination.unlink()
        raise
    return destination


def rv_templates_load() -> TemplateBank:
    """The RV template bank built from the spectrum model at SPECTRUM_MODEL_PATH."""
    return template_bank_from_model(CannonSpectrumModel.load(settings.SPECTRUM_MODEL_PATH))
