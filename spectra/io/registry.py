"""Registered readers behind one function.

A reader is an ``identify(path, fits_file) -> bool`` and ``load(path, fits_file) ->
SpectrumFile`` pair; the first whose identify answers yes loads the file. New surveys or
layouts register their own pair.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptFileError, UnknownFormatError
from .fitsbytes import MAX_FILE_BYTES, FitsFile, open_fits_bytes
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


def read_spectrum_file(path: str | Path, data: bytes | None = None, *, max_bytes: int = MAX_FILE_BYTES) -> SpectrumFile:
    """Read one file (plain or gzipped FITS). ``data`` are its bytes if already in memory.

    A file, or its decompressed content, larger than ``max_bytes`` is refused as corrupt
    without being read (or inflated) further. Raises a SpectrumFileError subclass naming
    the file and the problem.
    """
    path = str(path)
    if data is None:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise CorruptFileError(path, f"{size} bytes, more than the {max_bytes} a spectrum file may have")
        data = Path(path).read_bytes()
    fits_file = open_fits_bytes(path, data, max_bytes=max_bytes)
    for reader in _READERS:
        if reader.identify(path, fits_file):
            return reader.load(path, fits_file)
    raise UnknownFormatError(path, f"no registered reader recognises this file (readers: {', '.join(registered_readers())})")
