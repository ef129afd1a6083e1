from django.apps import AppConfig
from django.db.models.signals import post_delete, pre_delete


def _release_deleting(sender, instance, **kwargs):
    from .partitions import release_build_running_refuse

    release_build_running_refuse(instance.pk, instance.name)  # (in the deletion's transaction)


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
        pre_delete.connect(_release_deleting, sender=self.get_model("CatalogRelease"), dispatch_uid="release-busy")
        post_delete.connect(_release_deleted, sender=self.get_model("CatalogRelease"), dispatch_uid="release-files")
