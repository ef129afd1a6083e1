"""API building blocks shared by the apps: filters, pagination, renderers, errors, schema."""
