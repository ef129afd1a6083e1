"""Celery tasks: thin interfaces over services and selectors."""

from celery import shared_task

from inference.selectors import catalog_counts


@shared_task(name="tasks.catalog_counts", acks_late=True)
def catalog_counts_task() -> dict[str, int]:
    """Row counts of the catalog tables: a health check that crosses broker, worker and database."""
    return catalog_counts()
