from django.apps import AppConfig
from django.db.models.signals import post_delete


def _release_deleted(sender, instance, **kwargs):
    from .services.release_files import release_files_remove

    release_files_remove(instance)


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # However a release goes, its written files go with it.
        post_delete.connect(_release_deleted, sender=self.get_model("CatalogRelease"), dispatch_uid="release-files")
