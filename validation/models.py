"""Reference surveys and cross-survey validation results."""
