from django.apps import AppConfig


class SpectraConfig(AppConfig):
    name = "spectra"
    default_auto_field = "django.db.models.BigAutoField"
