from celery import shared_task


@shared_task(name="vo.run_tap_job")
def run_tap_job(job_id: str) -> str:
    """Run one asynchronous TAP query (vo/services.py)."""
    from .services import job_run

    return job_run(job_id)
