from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers: services send
        # them by name (tasks.services.STAGE_TASKS).
        from . import tasks  # noqa: F401
