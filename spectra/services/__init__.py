"""Writes of the spectra app: ingest (``ingest``), star identity and duplicate merging
(``star_identity``), curation (``curation``). Reads are in ``spectra.selectors``."""
