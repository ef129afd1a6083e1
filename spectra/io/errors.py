"""Typed errors of the readers: each names the file and the problem."""


class SpectrumFileError(Exception):
    """A file that cannot be read at all. ``kind`` is a short stable name for reports."""

    kind = "unreadable"

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CorruptFileError(SpectrumFileError):
    """Truncated or corrupt compression, or a FITS structure cut short."""

    kind = "corrupt"


class TruncatedFileError(CorruptFileError):
    """A file that holds fewer HDUs or exposures than its own header declares.

    A copy cut short exactly at an HDU boundary is still a well-formed FITS file; only the
    header's counts (NEXTEND, NEXP_B, NEXP_R) show that part of it is gone.
    """

    kind = "truncated"


class NotFitsError(SpectrumFileError):
    kind = "not_fits"


class UnknownFormatError(SpectrumFileError):
    """A FITS file that no registered reader recognises."""

    kind = "unknown_format"


class EmptyFileError(SpectrumFileError):
    """A recognised file without a single spectrum table in it."""

    kind = "empty"


class HeaderError(SpectrumFileError):
    """A header fact the catalog needs (RA, DEC, PLANID...) is missing or malformed."""

    kind = "bad_header"
