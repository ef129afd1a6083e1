"""Self-describing, content-addressed model artifacts.

An artifact is one zip file: ``manifest.json`` (configuration, label names and their
standardisation, uncertainty model, training-set hash, preprocessing version, library
versions, seed, weight shapes) and one ``.npy`` per weight array, plus named arrays of
the input path (``arrays/<name>.npy``: the masked-pixel fill basis, ``inputs.py``) where
the model has them; artifacts without them read as before. Entries carry a fixed
timestamp, so the same model gives the same bytes; the file is named by its sha256, and
loading recomputes the hash and refuses a file that does not match, or one made for a
different preprocessing of the spectra.
"""

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ARTIFACT_FORMAT = "spcanet-artifact/1"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class ArtifactError(Exception):
    """The artifact is missing, altered, or incompatible with this installation."""


@dataclass(frozen=True)
class Artifact:
    """A model as stored: its manifest, its weights and its named arrays.

    Parameters
    ----------
    manifest : dict
        JSON-serialisable description (configuration, label names and scaling, noise
        model, training-set hash, preprocessing version, library versions, seed).
    weights : list of ndarray
        The Keras weights in ``model.get_weights()`` order; written as float32.
    arrays : dict of str to ndarray, optional
        Named float32 arrays besides the weights (the masked-pixel fill basis).
    """

    manifest: dict
    weights: list[np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # named float32 arrays besides the weights


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def artifact_bytes(artifact: Artifact) -> bytes:
    """The artifact as zip bytes, the same bytes for the same model.

    Parameters
    ----------
    artifact : Artifact
        The model.

    Returns
    -------
    bytes
        A zip of ``manifest.json`` (with ``format``, ``weight_shapes`` and, when there are
        arrays, ``array_names`` added), ``weights/NNNN.npy`` and ``arrays/<name>.npy``
        (float32, C order), every entry with a fixed timestamp.
    """
    manifest = dict(artifact.manifest, format=ARTIFACT_FORMAT,
                    weight_shapes=[list(w.shape) for w in artifact.weights])
    if artifact.arrays:  # only then, so that a model without them keeps its bytes
        manifest["array_names"] = sorted(artifact.arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_entry("manifest.json"), json.dumps(manifest, sort_keys=True, indent=1))
        for i, weight in enumerate(artifact.weights):
            array = io.BytesIO()
            np.save(array, np.array(weight, dtype=np.float32, order="C"), allow_pickle=False)  # keeps 0-d shapes
            archive.writestr(_entry(f"weights/{i:04d}.npy"), array.getvalue())
        for name in sorted(artifact.arrays):
            array = io.BytesIO()
            np.save(array, np.array(artifact.arrays[name], dtype=np.float32, order="C"), allow_pickle=False)
            archive.writestr(_entry(f"arrays/{name}.npy"), array.getvalue())
    return buffer.getvalue()


def artifact_write(root: str | Path, artifact: Artifact) -> tuple[str, str]:
    """Write under ``root``, named by its content's sha256. Idempotent.

    Parameters
    ----------
    root : str or Path
        Directory of the artifacts; created as needed.
    artifact : Artifact
        The model.

    Returns
    -------
    relative : str
        ``<sha256[:2]>/<sha256>.spcanet.zip``, relative to ``root``.
    sha256 : str
        Hex digest of the bytes (``artifact_bytes``). An existing file is left as it is;
        a new one is written to a temporary name and renamed into place.
    """
    payload = artifact_bytes(artifact)
    sha256 = hashlib.sha256(payload).hexdigest()
    relative = f"{sha256[:2]}/{sha256}.spcanet.zip"
    target = Path(root) / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".tmp-{os.getpid()}")
        temporary.write_bytes(payload)
        os.replace(temporary, target)
    return relative, sha256


def artifact_read(path: str | Path, *, expected_sha256: str, preprocessing_version: str) -> Artifact:
    """Load and verify an artifact.

    Parameters
    ----------
    path : str or Path
        The artifact file.
    expected_sha256 : str
        Hex digest the model registry holds for it.
    preprocessing_version : str
        Preprocessing version of this installation; the artifact must have been trained on it.

    Returns
    -------
    Artifact
        Weights and arrays as stored (float32).

    Raises
    ------
    ArtifactError
        If the file is missing, its sha256 differs from ``expected_sha256``, it is not an
        SPCANet artifact, or it was trained on spectra of another preprocessing version.
    """
    path = Path(path)
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise ArtifactError(f"{path}: cannot read the model artifact ({error.strerror})") from error
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: sha256 is {actual}, the registry expects {expected_sha256}; refusing to load")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("format") != ARTIFACT_FORMAT:
                raise ArtifactError(f"{path}: format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
            weights = [
                np.load(io.BytesIO(archive.read(f"weights/{i:04d}.npy")), allow_pickle=False)
                for i in range(len(manifest["weight_shapes"]))
            ]
            arrays = {name: np.load(io.BytesIO(archive.read(f"arrays/{name}.npy")), allow_pickle=False)
                      for name in manifest.get("array_names", [])}
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ArtifactError(f"{path}: not a readable SPCANet artifact ({error})") from error
    if manifest.get("preprocessing_version") != preprocessing_version:
        raise ArtifactError(
            f"{path}: trained on spectra of preprocessing version {manifest.get('preprocessing_version')!r}, "
            f"this installation produces {preprocessing_version!r}; retrain the model"
        )
    return Artifact(manifest=manifest, weights=weights, arrays=arrays)
