from django.apps import AppConfig
from django.db.models.signals import post_delete


def _release_deleted(sender, instance, **kwargs):
    from .partitions import partitions_drop
    from .services.release_files import release_files_remove

    release_files_remove(instance)
    partitions_drop(instance.pk)  # its rows went with it; the empty tables go too


class InferenceConfig(AppConfig):
    name = "inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # However a release goes, its written files and its partitions go with it.
        post_delete.connect(_release_deleted, sender=self.get_model("CatalogRelease"), dispatch_uid="release-files")
