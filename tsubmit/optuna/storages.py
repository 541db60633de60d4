"""Named external Optuna storages (`tsubmit db add/list/remove`) and what
`--optuna-storage` accepts.

A YAML mapping name -> URL in `<config dir>/optuna-storages.yml`, mode 0600,
since URLs may hold passwords. URLs are shown with the password masked,
never in full.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ..errors import UsageError
from ..paths import ansible_dir, config_dir, ensure_private_dir

STORAGES_FILE = "optuna-storages.yml"
DIRECTIONS = ("minimize", "maximize")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCHEME = re.compile(r"^(postgresql|mysql)(\+[a-z0-9_]+)?$")
_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"


# --------------------------------------------------------------------------- URLs


def mask_url(url: str) -> str:
    """URL with its password replaced by ***, for printing: the head's own code
    (roles/optuna_store/files/store_urls.py), so both sides mask a URL alike."""
    return _node_urls().mask_url(url)


@functools.cache
def _node_urls():
    path = ansible_dir() / "roles" / "optuna_store" / "files" / "store_urls.py"
    spec = importlib.util.spec_from_file_location("tsubmit._optuna_store_urls", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validate_storage_url(url: str) -> str:
    """URL if it names a PostgreSQL or MySQL database SQLAlchemy can parse; else a
    UsageError of one line (with the password masked)."""
    def bad(reason: str) -> UsageError:
        return UsageError(f"invalid Optuna storage URL {mask_url(url)!r}: {reason}; expected e.g. {_EXAMPLE}")

    if not url or re.search(r"[\s\x00-\x1f\x7f]", url):
        raise bad("it is empty or holds spaces or control characters")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise bad("no scheme:// (give a URL, or the name of a storage from `tsubmit db list`)")
    if scheme.startswith(("sqlite", "grpc")):
        raise bad("SQLite files and gRPC addresses cannot be shared by nodes as an external storage; "
                  "leave --optuna-storage out to use the head-node store")
    if scheme in ("postgres",) or scheme.startswith("postgres+"):
        raise bad("SQLAlchemy calls the dialect postgresql, not postgres")
    if not _SCHEME.match(scheme):
        raise bad(f"unsupported scheme {scheme!r} (use postgresql:// or mysql://, optionally +driver)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise bad(str(error)) from None
    if parts.netloc.count("@") > 1:
        raise bad("percent-encode special characters of the user and password (@ as %40, : as %3A)")
    if not parts.hostname:
        raise bad("no host")
    if not parts.path.strip("/"):
        raise bad("no database name after the host")
    return url


# --------------------------------------------------------------------------- named storages


def storages_file() -> Path:
    return config_dir() / STORAGES_FILE


def load_storages() -> dict[str, str]:
    path = storages_file()
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UsageError(f"{path} must be a mapping of storage names to URLs")
    return {str(key): value for key, value in data.items()}


def _save_storages(storages: dict[str, str]) -> None:
    path = storages_file()
    ensure_private_dir(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# Optuna storages for `tsubmit run --optuna-storage NAME` (mode 0600: URLs may "
                     "hold passwords)\n")
        handle.write(yaml.safe_dump(storages, sort_keys=True) if storages else "{}\n")
    os.replace(temporary, path)


def check_storage_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(f"invalid storage name {name!r}: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit")
    return name


def add_storage(name: str, url: str, *, replace: bool = False) -> None:
    check_storage_name(name)
    validate_storage_url(url)
    storages = load_storages()
    if name in storages and not replace:
        raise UsageError(f"a storage named {name} exists already ({mask_url(storages[name])}); "
                         "add --replace to change it")
    storages[name] = url
    _save_storages(storages)


def remove_storage(name: str) -> str:
    storages = load_storages()
    if name not in storages:
        raise UsageError(f"no Optuna storage named {name} (see `tsubmit db list`)")
    url = storages.pop(name)
    _save_storages(storages)
    return url


def list_storages() -> list[dict]:
    """Every named storage, its URL masked."""
    return [{"name": name, "url": mask_url(url)} for name, url in sorted(load_storages().items())]


def resolve_storage(value: str | None) -> str | None:
    """What --optuna-storage names: None (the head-node store), a URL, or a storage name."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    if "://" in value:
        return validate_storage_url(value)
    if not _NAME.match(value):
        raise UsageError(f"--optuna-storage {mask_url(value)!r} is neither a URL ({_EXAMPLE}) nor the "
                         "name of a storage from `tsubmit db list`")
    storages = load_storages()
    if value not in storages:
        raise UsageError(f"no Optuna storage named {value}; add it with `tsubmit db add {value} URL` "
                         "or give a URL")
    return validate_storage_url(storages[value])


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UsageError(f"--direction must be minimize or maximize, not {direction!r}")
    return direction
