"""The user's config file: defaults for every job, config.yaml in the config dir.

    # ~/.config/tsubmit/config.yaml (or $TSUBMIT_HOME/config/config.yaml)
    notify: [ntfy://my-training-runs]   # notification URLs of jobs that name none
    notify_on: [failed]                 # and their events

Its keys are job spec keys (tsubmit/model/jobspec.py), checked as a spec's are; a
job's own value (its spec, its options) wins over the file's. Keep the file
private (mode 0600): notification URLs hold tokens.
"""

from pathlib import Path

import yaml

from ..errors import UsageError
from ..paths import config_dir

KEYS = ("notify", "notify_on")


def path() -> Path:
    return config_dir() / "config.yaml"


def load() -> dict:
    """The file's keys, validated; {} when there is no file."""
    from ..model.jobspec import BY_KEY, check

    file = path()
    try:
        data = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read the config file {file}: {str(error).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"the config file {file} must be a mapping of keys such as notify")
    unknown = sorted(set(map(str, data)) - set(KEYS))
    if unknown:
        raise UsageError(f"the config file {file}: unknown key {unknown[0]!r} (it knows {', '.join(KEYS)})")
    return {key: check(BY_KEY[key], value, f"the config file {file}") for key, value in data.items()}
