"""Registered readers behind one function.

A reader is an ``identify(path, fits_file) -> bool`` and ``load(path, fits_file) ->
SpectrumFile`` pair; the first whose identify answers yes loads the file. New surveys or
layouts register their own pair.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import UnknownFormatError
from .fitsbytes import FitsFile, open_fits_bytes
from .types import SpectrumFile


@dataclass(frozen=True)
class Reader:
    name: str
    identify: Callable[[str, FitsFile], bool]
    load: Callable[[str, FitsFile], SpectrumFile]


_READERS: list[Reader] = []


def register_reader(name: str, identify, load) -> None:
    if any(reader.name == name for reader in _READERS):
        raise ValueError(f"a reader named {name} is already registered")
    _READERS.append(Reader(name, identify, load))


def registered_readers() -> list[str]:
    return [reader.name for reader in _READERS]


def read_spectrum_file(path: str | Path, data: bytes | None = None) -> SpectrumFile:
    """Read one file (plain or gzipped FITS). ``data`` are its bytes if already in memory.

    Raises a SpectrumFileError subclass naming the file and the problem.
    """
    path = str(path)
    if data is None:
        data = Path(path).read_bytes()
    fits_file = open_fits_bytes(path, data)
    for reader in _READERS:
        if reader.identify(path, fits_file):
            return reader.load(path, fits_file)
    raise UnknownFormatError(path, f"no registered reader recognises this file (readers: {', '.join(registered_readers())})")
