"""Jobs and clusters as plain data: the stable shape of `-o json` output."""

import copy
from dataclasses import asdict

from ..model.job import Job


def public_extras(extras: dict) -> dict:
    """A job's extras with its secrets masked: the password of an external
    Optuna storage URL, the notification URLs."""
    shown = copy.deepcopy(extras)
    if (shown.get("optuna") or {}).get("storage"):
        from ..optuna.storages import mask_url

        shown["optuna"]["storage"] = mask_url(shown["optuna"]["storage"])
    if shown.get("notify"):
        from .notify import public

        shown["notify"] = public(shown["notify"])
    return shown


def job_view(job: Job) -> dict:
    data = asdict(job)
    data["env"] = sorted(job.env)  # names only: values may be secrets
    data["extras"] = public_extras(job.extras)
    return data
