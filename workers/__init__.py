"""Celery workers that run the hub's jobs, plus the relay that feeds them from the job table."""
