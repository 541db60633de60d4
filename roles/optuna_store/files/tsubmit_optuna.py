"""The study of a tsubmit Optuna job, in one call, without tsubmit on the node.

    import tsubmit_optuna
    study = tsubmit_optuna.load_study()
    study.optimize(objective, n_trials=20)

The launch puts this file's folder on every worker's PYTHONPATH and sets
OPTUNA_STUDY_NAME (or STUDY_NAME); DATABASE_URI, the external database URL or
grpc://HOST:PORT for the head-node store (tsubmit's own notation, which the
sitecustomize.py beside this file teaches Optuna); TSUBMIT_OPTUNA_GRPC_HOST/_PORT
(the head-node store) or OPTUNA_STORAGE (an external database); and
TSUBMIT_JOB_ID and NODE_RANK, recorded on each trial this process creates
(system attributes tsubmit:job and tsubmit:node), so that stopping a job fails
only its own RUNNING trials. The head-node store is reached through Optuna's
GrpcStorageProxy, whose calls wait for the store while it is started again
(tsubmit_optuna_grpc.py). It needs optuna>=4.3, grpcio and protobuf; an
external database needs its driver (psycopg2-binary, PyMySQL, ...).
"""

from __future__ import annotations

import os

import tsubmit_optuna_grpc  # Optuna's private gRPC API, shipped beside this file

GRPC_SCHEME = "grpc://"
JOB_ATTR, NODE_ATTR = "tsubmit:job", "tsubmit:node"
# How long one call to the head-node store may wait for it (a restart takes seconds).
STORE_WAIT_SECONDS = float(os.environ.get("TSUBMIT_OPTUNA_WAIT", "300"))


class StudyNotConfigured(RuntimeError):
    """The variables tsubmit sets for an Optuna worker are missing."""


def study_name() -> str:
    name = os.environ.get("OPTUNA_STUDY_NAME") or os.environ.get("STUDY_NAME")
    if not name:
        raise StudyNotConfigured("OPTUNA_STUDY_NAME is not set: run this under "
                                 "`tsubmit run --executor optuna`, or set it and DATABASE_URI")
    return name


def storage():
    """The job's Optuna storage object (a GrpcStorageProxy, or an RDBStorage)."""
    import optuna

    uri = os.environ.get("DATABASE_URI", "")
    host, port = os.environ.get("TSUBMIT_OPTUNA_GRPC_HOST"), os.environ.get("TSUBMIT_OPTUNA_GRPC_PORT")
    if host and port:
        return _grpc_storage(host, int(port))
    if uri.startswith(GRPC_SCHEME):
        return storage_for_uri(uri)
    url = os.environ.get("OPTUNA_STORAGE") or uri
    if not url:
        raise StudyNotConfigured("DATABASE_URI is not set: run this under "
                                 "`tsubmit run --executor optuna`, or set it and OPTUNA_STUDY_NAME")
    return optuna.storages.get_storage(optuna.storages.RDBStorage(url))


def storage_for_uri(uri: str):
    """The store `grpc://HOST:PORT` names (an IPv6 host in brackets): what
    `optuna.load_study(storage=os.environ["DATABASE_URI"])` gets (sitecustomize.py)."""
    address, _, port = uri[len(GRPC_SCHEME):].rstrip("/").rpartition(":")
    if not address or not port.isdigit():
        raise ValueError(f"{uri!r} is not grpc://HOST:PORT")
    return _grpc_storage(address.strip("[]"), int(port))


def load_study(*, sampler=None, pruner=None, tag_trials: bool = True):
    """The job's study (created by tsubmit before the workers started)."""
    import optuna

    backend = storage()
    study = optuna.load_study(study_name=study_name(), storage=backend, sampler=sampler, pruner=pruner)
    if tag_trials:
        tag_new_trials(backend)
    return study


def _grpc_storage(host: str, port: int):
    proxy = tsubmit_optuna_grpc.patient_proxy(host, port, STORE_WAIT_SECONDS)
    proxy.wait_server_ready(timeout=STORE_WAIT_SECONDS)
    return proxy


def tag_new_trials(backend) -> None:
    """Record the job and node on every trial this process creates."""
    job, node = os.environ.get("TSUBMIT_JOB_ID"), os.environ.get("NODE_RANK")
    if not job:
        return
    create = backend.create_new_trial

    def create_new_trial(study_id, template_trial=None):
        trial_id = create(study_id, template_trial)
        backend.set_trial_system_attr(trial_id, JOB_ATTR, job)
        if node is not None:
            backend.set_trial_system_attr(trial_id, NODE_ATTR, node)
        return trial_id

    backend.create_new_trial = create_new_trial
