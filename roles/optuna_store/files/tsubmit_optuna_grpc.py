"""Optuna's private gRPC API, here and nowhere else, so that an Optuna release
that moves its internals is met in one place. Shipped with the store's scripts
(the server side) and with the workers' helper (the client side); each side's
piece falls back to Optuna's public API when this Optuna lays its internals out
otherwise:

  add_storage_service(server, storage)   the servicer on a grpc.server of our own
                                         (SO_REUSEPORT off)
  patient_proxy(host, port, wait)        a GrpcStorageProxy whose calls wait for
                                         the store (started again after a crash)
                                         instead of failing at once
"""

from __future__ import annotations

import json
import re
import warnings

# The oldest Optuna whose layout this file knows: optuna.storages._grpc.servicer,
# GrpcStorageProxy._setup and close() came in 4.3. scripts/compat.sh tests this
# file on it, the main test venv on the newest; the head-node store and its
# workers refuse an older one (optuna_store.check), which would fall back
# silently to a proxy that does not wait for a restarting store.
OLDEST_OPTUNA = (4, 3)
OPTUNA_REQUIREMENT = "optuna>=" + ".".join(map(str, OLDEST_OPTUNA))


def optuna_too_old() -> str | None:
    """What is wrong with this Python's Optuna for the head-node store: None when it
    is recent enough, or not installed (the caller says that)."""
    try:
        import optuna
    except ImportError:
        return None
    version = tuple(int(part) for part in re.findall(r"\d+", optuna.__version__)[:2])
    if version < OLDEST_OPTUNA:
        return f"optuna {optuna.__version__} is older than {OPTUNA_REQUIREMENT.removeprefix('optuna>=')}"
    return None


def service_config(wait: float) -> str:
    """gRPC's service config for the store's client: every method waits up to WAIT
    seconds for the store to be ready and retries while it is UNAVAILABLE."""
    return json.dumps({"methodConfig": [{
        "name": [{}],  # every method
        "waitForReady": True,
        "timeout": f"{int(wait)}s",
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.5s", "maxBackoff": "8s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }]})


def channel_options(wait: float) -> list[tuple[str, object]]:
    """Optuna's own channel options (no message size limit) and the patient service config."""
    return [("grpc.max_receive_message_length", -1), ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config(wait))]


def add_storage_service(server, storage) -> bool:
    """Put Optuna's gRPC storage service for STORAGE on SERVER, as run_grpc_proxy_server
    does; False when this Optuna lays its internals out otherwise."""
    try:
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.servicer import OptunaStorageProxyService
    except ImportError:
        return False
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    return True


try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GrpcStorageProxy is marked experimental
        from optuna.storages import GrpcStorageProxy as _Base
except ImportError:  # an Optuna without gRPC (< 4.2), or none: patient_proxy says so when used
    _Base = object


class PatientProxy(_Base):
    """A GrpcStorageProxy whose _setup (called by __init__ and by unpickling, so a
    pickled proxy stays patient) builds the same stub and cache on a patient channel."""

    def __init__(self, *, host: str, port: int, wait: float) -> None:
        self._tsubmit_wait = wait  # before __init__, which calls _setup; kept when pickled
        super().__init__(host=host, port=port)

    def _setup(self) -> None:
        import grpc
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import GrpcClientCache

        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}",
                                              options=channel_options(self._tsubmit_wait))
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)


def patient_proxy(host: str, port: int, wait: float):
    """A proxy to the store at HOST:PORT whose calls wait up to WAIT seconds for it (the
    stock GrpcStorageProxy for another client layout); ImportError without gRPC (< 4.2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from optuna.storages import GrpcStorageProxy

        try:
            return PatientProxy(host=host, port=port, wait=wait)
        except (ImportError, AttributeError, TypeError):  # another Optuna layout: the stock client
            return GrpcStorageProxy(host=host, port=port)
