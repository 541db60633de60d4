"""Action of tsubmit.cluster.optuna_store (documented in plugins/modules/optuna_store.py).

The optuna_store role's steps on the head: the store's paths computed from the
launch contract's layout (plugin_utils/launch_contract.py: the job's folder,
the store's, every rank's attempt folder, the study's SQLite file), then the
role's files/optuna_store.py ACTION run with them and with the modules it
imports, through run_script's one SSH execution.
"""

import json
import os

from ansible import constants
from ansible.errors import AnsibleActionFail

from ansible_collections.tsubmit.cluster.plugins.action.run_script import ActionModule as RunScript
from ansible_collections.tsubmit.cluster.plugins.plugin_utils import launch_contract as layout

ACTIONS = ("start", "stop", "release", "summary", "snapshot", "dashboard", "check")
# The modules optuna_store.py imports: the role's own, and what it shares with
# other roles (found beside this role, else on the roles path).
OWN_FILES = ("store_study.py", "store_urls.py", "tsubmit_optuna_grpc.py")
SHARED_FILES = {"tsubmit_procs.py": "node_lib", "stop.sh": "stop"}
# The file start is handed an external storage's URL in (it may hold a password).
URL_FILE = "storage-url"


class ActionModule(RunScript):

    def run(self, tmp=None, task_vars=None):
        action = self._task.args.get("action")
        if action not in ACTIONS:
            raise AnsibleActionFail(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        value = lambda name, default=None: self._templar.template(task_vars.get(name, default))  # noqa: E731
        options = dict(self._templar.template(self._task.args.get("options") or {}))
        probes = task_vars.get("preflight_nodes")
        root = (probes[task_vars["inventory_hostname"]]["remote_root"] if probes
                else value("optuna_store_remote_root"))
        job_id, attempt = str(value("tsubmit_job_id")), int(value("tsubmit_job_attempt", 1) or 1)
        options.update(
            dir=layout.optuna_dir(job_id, root), job_dir=layout.job_dir(job_id, root), job_id=job_id,
            attempt=attempt, grace=int(value("optuna_store_grace", 10)),
            timeout=int(value("optuna_store_timeout", 60)),
            rank_attempt_dir=layout.rank_attempts(job_id, attempt, root))
        if "study" in options:
            options["study_file"] = layout.study_file(options["study"], root, options.pop("studies_dir", ""))
        role_path = self._task._role._role_path
        files = [{"name": name, "src": f"{role_path}/files/{name}", "mode": "0644"} for name in OWN_FILES]
        # An external database's URL (it may hold a password) is read here, never a
        # task's argument, and reaches the node as a private file of the stream.
        storage = action == "start" and (value("tsubmit_job_optuna") or {}).get("storage")
        if storage:
            files.append({"name": URL_FILE, "content": storage, "mode": "0600"})
            options["url_file"] = URL_FILE
        files += [{"name": name, "src": self._shared(role_path, role, name), "mode": "0644"}
                  for name, role in SHARED_FILES.items()]
        self._task.args = {"script": "optuna_store.py", "executable": value("optuna_store_python"),
                           "args": [action, json.dumps(options)], "files": files,
                           **({"check_output": self._task.args["check_output"]}
                              if "check_output" in self._task.args else {})}
        return super().run(tmp, task_vars)

    @staticmethod
    def _shared(role_path: str, role: str, name: str) -> str:
        """ROLE's file NAME: beside this role, else on the roles path (this role
        replaced from TSUBMIT_ANSIBLE_PATH)."""
        for folder in [os.path.dirname(role_path), *constants.DEFAULT_ROLES_PATH]:
            path = os.path.join(os.path.expanduser(folder), role, "files", name)
            if os.path.isfile(path):
                return path
        raise AnsibleActionFail(f"cannot find {role}/files/{name} beside {role_path} or on the roles path")
