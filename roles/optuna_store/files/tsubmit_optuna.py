"""The study of a tsubmit Optuna job, in one call, without tsubmit on the node.

    import tsubmit_optuna
    study = tsubmit_optuna.load_study()
    study.optimize(objective, n_trials=20)

tsubmit copies this file into the job's folder and puts that folder on
PYTHONPATH. It reads the variables every worker of `tsubmit run --executor
optuna` gets:

  OPTUNA_STUDY_NAME (or STUDY_NAME)   the study
  DATABASE_URI                        the external database URL, or grpc://HOST:PORT for the
                                      head-node store (tsubmit's own notation, not an Optuna URL)
  TSUBMIT_OPTUNA_GRPC_HOST/_PORT      the head-node store (only with it)
  OPTUNA_STORAGE                      the external database URL (only with one)
  TSUBMIT_JOB_ID, NODE_RANK           recorded on each trial the study creates (system
                                      attributes tsubmit:job and tsubmit:node), so that
                                      stopping a job fails only its own RUNNING trials

Optuna's own calls work too: `optuna.load_study(study_name=os.environ["STUDY_NAME"],
storage=os.environ["DATABASE_URI"])`, torch-submit's contract, reaches the same
store, because the sitecustomize.py beside this file teaches Optuna the grpc://
URI (TSUBMIT_OPTUNA_URI=off turns that off).

The head-node store is reached through Optuna's GrpcStorageProxy; its calls
wait for the store while it is being started again instead of
failing at once (tsubmit_optuna_grpc.py, shipped beside this file, the one
home of Optuna's private gRPC API, which the store's server uses too). It
needs optuna>=4.3, grpcio and protobuf on the node; an external database needs
its driver (psycopg2-binary, PyMySQL, ...).
"""

from __future__ import annotations

import os

import tsubmit_optuna_grpc  # Optuna's private gRPC API, shipped beside this file

GRPC_SCHEME = "grpc://"
JOB_ATTR = "tsubmit:job"
NODE_ATTR = "tsubmit:node"
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


def grpc_endpoint() -> tuple[str, int] | None:
    """(host, port) of the head-node store, or None with an external database."""
    uri = os.environ.get("DATABASE_URI", "")
    host = os.environ.get("TSUBMIT_OPTUNA_GRPC_HOST")
    port = os.environ.get("TSUBMIT_OPTUNA_GRPC_PORT")
    if host and port:
        return host, int(port)
    if uri.startswith(GRPC_SCHEME):
        return parse_grpc_uri(uri)
    return None


def parse_grpc_uri(uri: str) -> tuple[str, int]:
    """(host, port) of `grpc://HOST:PORT` (an IPv6 host in brackets)."""
    address, _, port = uri[len(GRPC_SCHEME):].rstrip("/").rpartition(":")
    if not address or not port.isdigit():
        raise ValueError(f"{uri!r} is not grpc://HOST:PORT")
    return address.strip("[]"), int(port)


def storage_for_uri(uri: str):
    """The storage a `grpc://HOST:PORT` URI names: what `optuna.load_study(storage=
    os.environ["DATABASE_URI"])` gets on a tsubmit worker (see sitecustomize.py)."""
    return _grpc_storage(*parse_grpc_uri(uri))


def storage():
    """The job's Optuna storage object (a GrpcStorageProxy, or an RDBStorage)."""
    import optuna

    endpoint = grpc_endpoint()
    if endpoint is not None:
        return _grpc_storage(*endpoint)
    url = os.environ.get("OPTUNA_STORAGE") or os.environ.get("DATABASE_URI")
    if not url:
        raise StudyNotConfigured("DATABASE_URI is not set: run this under "
                                 "`tsubmit run --executor optuna`, or set it and OPTUNA_STUDY_NAME")
    return optuna.storages.get_storage(optuna.storages.RDBStorage(url))


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
