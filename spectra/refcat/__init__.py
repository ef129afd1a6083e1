"""One machinery for reference catalogs: training labels and validation surveys alike.

``formats`` describes a catalog (either mapping dialect), ``reading`` reads it (FITS or
CSV, exact 64-bit ids, labels in our convention), ``quality`` applies its survey's
documented per-row and per-label rules and the duplicate policy, ``matching`` matches the
stored rows to our stars (``core.crossmatch``) and writes only what changed. The
survey-specific rules and their sources are in ``validation/quality.py``.
"""
