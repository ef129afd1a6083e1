"""Readers of spectrum files: one function in front of registered per-format readers.

Pure Python/numpy/astropy, no Django.
"""

from .errors import (
    CorruptFileError,
    EmptyFileError,
    HeaderError,
    NotFitsError,
    SpectrumFileError,
    TruncatedFileError,
    UnknownFormatError,
)
from .registry import read_spectrum_file, register_reader, registered_readers
from .types import Arm, ArmProblem, RawSpectrum, SpectrumFile

# Importing the readers registers them.
from . import lamost_mrs  # noqa: E402,F401  isort: skip

__all__ = [
    "Arm",
    "ArmProblem",
    "CorruptFileError",
    "EmptyFileError",
    "HeaderError",
    "NotFitsError",
    "RawSpectrum",
    "SpectrumFile",
    "SpectrumFileError",
    "TruncatedFileError",
    "UnknownFormatError",
    "read_spectrum_file",
    "register_reader",
    "registered_readers",
]
