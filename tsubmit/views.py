"""Jobs and clusters as plain data: the stable shape of `-o json` output."""

from dataclasses import asdict

from .job import Job


def job_view(job: Job) -> dict:
    data = asdict(job)
    data["env"] = sorted(job.env)  # names only: values may be secrets
    return data
