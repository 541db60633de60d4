"""The collection's own Python (plugins/plugin_utils/), used on the controller.

Those modules belong to the collection (ansible_collections.tsubmit.cluster),
not to this package, and import nothing of Ansible: tsubmit loads them by
path, as one package, so their relative imports work here as under Ansible.
"""

import functools
import importlib
import sys
import types

from ..paths import ansible_dir

_PACKAGE = "tsubmit._plugin_utils"


@functools.cache
def plugin_utils(name: str):
    """plugins/plugin_utils/NAME.py."""
    if _PACKAGE not in sys.modules:
        folder = ansible_dir() / "ansible_collections" / "tsubmit" / "cluster" / "plugins" / "plugin_utils"
        package = types.ModuleType(_PACKAGE)
        package.__path__ = [str(folder)]  # a namespace of its own: the folder has no __init__.py
        sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.{name}")


def launch_contract():
    """plugins/plugin_utils/launch_contract.py: what ranks run, the probe
    request, the host variables' defaults and the remote layout."""
    return plugin_utils("launch_contract")
