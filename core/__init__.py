"""What every app shares and is not about spectra: the label and flag vocabulary, the
catalog's thresholds, bulk database writes, sky geometry and cross-matching, API and
admin base classes, and the PNG helper of the plots."""
