"""The remote layout, named once: its home is the collection's launch contract
(plugins/plugin_utils/launch_contract.py), for the roles and for tsubmit
(logs, status, stop, shell, fetch) alike. This module is that one, loaded by
path (tsubmit/model/collection.py), under the name the controller's modules import."""

import sys

from .collection import launch_contract

sys.modules[__name__] = launch_contract()
