from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, pre_migrate


def _drop_views(sender, using="default", **kwargs):
    from django.db import connections

    from .setup import drop_views

    drop_views(connections[using])


def _setup(sender, using="default", **kwargs):
    from django.db import DatabaseError, connections

    from .setup import setup_tap

    try:
        setup_tap(connections[using])
    except DatabaseError as error:  # e.g. a database user that may not create roles
        import warnings

        warnings.warn(f"TAP not set up ({error}); run `manage.py vo_setup` as a user that may create roles",
                      stacklevel=1)


def _job_deleted(sender, instance, **kwargs):
    from .services import job_result_discard

    job_result_discard(instance)


class VoConfig(AppConfig):
    """IVOA services over the published releases: Simple Cone Search, TAP (sync and
    async, UWS), VOSI."""

    name = "vo"
    verbose_name = "VO services"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The views read inference's tables: out of the way of any migration, back after.
        pre_migrate.connect(_drop_views, sender=self, dispatch_uid="vo-drop-views")
        post_migrate.connect(_setup, sender=self, dispatch_uid="vo-setup")
        # However a job goes (deleted, expired, or with its owner's account), its result file goes too.
        post_delete.connect(_job_deleted, sender=self.get_model("TapJob"), dispatch_uid="vo-job-result")
