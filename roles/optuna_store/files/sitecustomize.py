"""tsubmit: Optuna understands the DATABASE_URI tsubmit hands its workers.

torch-submit's contract, `optuna.load_study(study_name=os.environ["STUDY_NAME"],
storage=os.environ["DATABASE_URI"])`, works with tsubmit's head-node store,
whose DATABASE_URI is `grpc://HOST:PORT` (Optuna alone would hand it to
SQLAlchemy). Python runs this file at start-up from the workers' PYTHONPATH; once
Optuna is imported, an import hook wraps `optuna.storages.get_storage`, through
which every study function resolves a storage string, so that a `grpc://`
string becomes the proxy `tsubmit_optuna.load_study()` uses. Anything else goes
to Optuna unchanged. TSUBMIT_OPTUNA_URI=off turns it off; another
`sitecustomize` later on sys.path still runs, after this one.
"""

import importlib.machinery
import importlib.util
import os
import sys

_TARGET = "optuna.storages"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _patch(storages) -> None:
    original = storages.get_storage
    if getattr(original, "_tsubmit", False):
        return
    proxies = {}

    def get_storage(storage):
        if isinstance(storage, str) and storage.startswith("grpc://"):
            if storage not in proxies:  # one channel per process, as Optuna caches RDB engines
                import tsubmit_optuna

                proxy = tsubmit_optuna.storage_for_uri(storage)
                tsubmit_optuna.tag_new_trials(proxy)
                proxies[storage] = proxy
            return proxies[storage]
        return original(storage)

    get_storage._tsubmit = True
    get_storage.__doc__ = original.__doc__
    storages.get_storage = get_storage


# The import hook and _chain() below have a twin in roles/preflight/files/
# rank_order.py, on purpose: each shim is shipped alone into a folder of its own
# and runs in every Python the job starts, before anything else, so it imports
# nothing but the standard library (a helper module missing or shadowed there
# would turn into "Error in sitecustomize" in every process of the job).
class _OptunaStoragesHook:
    """A meta path finder that patches optuna.storages once it is loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)  # once; the real finders find the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


def _install() -> None:
    if os.environ.get("TSUBMIT_OPTUNA_URI", "on").lower() in ("off", "0", "false", "no"):
        return
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    else:
        sys.meta_path.insert(0, _OptunaStoragesHook())


def _chain() -> None:
    """Run the next sitecustomize on sys.path, which this file shadows."""
    others = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install()
_chain()
