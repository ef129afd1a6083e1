"""Writes of the inference app: releases and their star tables (``release``), prediction
and label sets (``prediction``), training (``training``), reference labels for training
(``reference``) and the demo catalog (``demo``). Reads are in ``inference.selectors``."""
