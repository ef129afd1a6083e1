"""A mock LAMOST MRS survey: files that look like the real ones to the whole pipeline,
with known true labels. Pure numpy/scipy/astropy; no Django."""
