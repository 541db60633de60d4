"""The shape of the code that no e2e test sees at once: the controller reads
task results by task name, the roles lay a job's files out as tsubmit/model/layout.py
says, and the package's imports flow one way."""

import ast
import re
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml

from tsubmit.jobs import launch, lifecycle
from tsubmit.model import layout
from tsubmit.nodes import actions, cluster_check
from tsubmit.optuna import dashboard, study

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tsubmit"
TASK_NAMES = [*launch.START_TASKS, lifecycle.STATUS_TASK, lifecycle.SETUP_GC_TASK, actions.STOP_TASK,
              cluster_check.PROBE_TASK,
              cluster_check.LISTEN_TASK, cluster_check.CONNECT_TASK, study.SUMMARY_TASK, study.SNAPSHOT_TASK,
              dashboard.DASHBOARD_TASK]


def _task_names() -> set[str]:
    names = set()
    for folder in ("playbooks", "roles"):
        for path in (REPO / folder).rglob("*.yml"):
            names.update(match.strip().strip("'\"") for match in
                         re.findall(r"^\s*-?\s*name:\s*(.+)$", path.read_text(), re.MULTILINE))
    return names


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_name_the_controller_reads_exists(name):
    assert name in _task_names(), f"no task named {name!r} in playbooks/ or roles/"


# ------------------------------------------------------------- the remote layout

# Where the roles compose a path of the layout themselves (they write it, or an
# exported project runs them without tsubmit), and what layout.py says it is.
ROOT, JOB, RANK, ATTEMPT = "/R", "J", 1, 2
ROLE_PATHS = {
    ("stop", "defaults", "stop_rank_dir"): layout.rank_dir(JOB, RANK, ROOT),
    ("cleanup", "defaults", "cleanup_job_dir"): layout.job_dir(JOB, ROOT),
}


def _role_vars(role: str) -> dict:
    found = {}
    for kind in ("defaults", "vars"):
        path = REPO / "roles" / role / kind / "main.yml"
        if path.exists():
            found.update(yaml.safe_load(path.read_text()) or {})
    return found


def _rendered(role: str, name: str, context: dict) -> str:
    """NAME of ROLE rendered as Ansible would, the role's other variables resolved."""
    variables = _role_vars(role)
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.filters["tsubmit.cluster.remote_root"] = lambda value: value or layout.DEFAULT_ROOT

    def value(key: str, depth: int = 0):
        if key in context:
            return context[key]
        assert depth < 10 and key in variables, f"{role}: cannot resolve {key}"
        raw = variables[key]
        if not isinstance(raw, str):
            return raw
        template = environment.from_string(raw)
        needed = jinja2.meta.find_undeclared_variables(environment.parse(raw))
        return template.render({dep: value(dep, depth + 1) for dep in needed})

    return value(name)


@pytest.mark.parametrize(("role", "kind", "name"), list(ROLE_PATHS))
def test_the_roles_compose_the_layout_of_layout_py(role, kind, name):
    assert name in yaml.safe_load((REPO / "roles" / role / kind / "main.yml").read_text())
    # The remote root as preflight found it (launch, optuna_store), or the host variable.
    context = {"tsubmit_remote_root": ROOT,
               "tsubmit_job_id": JOB, "tsubmit_rank": RANK, "tsubmit_job_attempt": ATTEMPT}
    assert _rendered(role, name, context) == ROLE_PATHS[role, kind, name]


def test_the_remote_root_s_default_is_spelled_once():
    """Every role and playbook takes the remote root through the filter
    tsubmit.cluster.remote_root, whose default is layout.py's (the contract's);
    argument specs may document it."""
    through_filter = "tsubmit_remote_root | default(none) | tsubmit.cluster.remote_root"
    spelled = {path.relative_to(REPO).as_posix() for folder in ("roles", "playbooks", "plugins")
               for path in (REPO / folder).rglob("*")
               if path.is_file() and path.suffix in (".yml", ".py", ".j2", ".sh")
               and layout.DEFAULT_ROOT in path.read_text() and path.name != "argument_specs.yml"}
    assert spelled == {"plugins/plugin_utils/launch_contract.py", "plugins/filter/remote_root.py"}
    for path in ("playbooks/logs.yml", "playbooks/gc_setups.yml", "roles/stop/defaults/main.yml",
                 "roles/cleanup/defaults/main.yml", "roles/status/defaults/main.yml"):
        assert through_filter in (REPO / path).read_text(), path


def test_the_host_variables_defaults_are_spelled_once():
    """The roles take the node's python and torchrun through the filter
    tsubmit.cluster.host_default, whose defaults are the launch contract's
    (HOST_DEFAULTS); argument specs document the same expression."""
    for key in ("python", "torchrun"):
        name, default = layout.HOST_DEFAULTS[key]
        twin = re.compile(rf"{name}\s*\|\s*default\(\s*['\"]{default}['\"]")
        spelled = [path.relative_to(REPO).as_posix() for folder in ("roles", "playbooks")
                   for path in (REPO / folder).rglob("*.yml") if twin.search(path.read_text())]
        assert spelled == [], f"{key}'s default spelled again in {spelled}"
    for role in ("check", "gpu_lease", "optuna_store", "postmortem", "status"):
        defaults = (REPO / "roles" / role / "defaults" / "main.yml").read_text()
        assert "tsubmit_python | default(none) | tsubmit.cluster.host_default('python')" in defaults, role


# The files of a job and of an attempt: who writes each, who reads it, by the
# name layout.py gives it.
NODE_FILES = {
    layout.ARCHIVES: ["preflight/files/probe.py"],
    layout.WORKDIR: ["preflight/files/probe.py"],
    layout.RANK_LIB: ["preflight/files/probe.py"],
    layout.SETUPS: ["launch/files/start_rank.sh"],
    layout.PID: ["launch/templates/launch.sh.j2", "status/files/rank_status.py", "stop/files/stop.sh",
                 "optuna_store/files/optuna_store.py"],
    layout.EXIT_CODE: ["launch/templates/launch.sh.j2", "status/files/rank_status.py",
                       "stop/files/stop.sh", "optuna_store/files/optuna_store.py"],
    layout.STOPPED: ["stop/files/stop.sh", "status/files/rank_status.py",
                     "optuna_store/files/optuna_store.py"],
    layout.CONTAINER: ["launch/templates/launch.sh.j2", "status/files/rank_status.py",
                       "stop/files/stop.sh"],
    layout.LOG: ["launch/templates/launch.sh.j2", "status/files/rank_status.py"],
    layout.TORCHRUN_ERROR: ["launch/templates/environment.sh.j2", "status/files/rank_status.py"],
    layout.SETUP_LOG: ["launch/files/run_setup.sh"],
    layout.ENVIRONMENT: ["launch/templates/launch.sh.j2", "launch/files/start_rank.sh"],
    layout.LAUNCH: ["launch/files/start_rank.sh"],
}


@pytest.mark.parametrize("name", list(NODE_FILES))
def test_the_node_scripts_name_a_job_s_files_as_layout_py_does(name):
    for script in NODE_FILES[name]:
        text = (REPO / "roles" / script).read_text()
        assert re.search(r"[/\"]" + re.escape(name) + r"([\"\s]|$)", text, re.MULTILINE), \
            f"roles/{script} does not use {name!r}"


def test_the_rank_marker_is_launch_sh_s():
    text = (REPO / "roles" / "launch" / "templates" / "launch.sh.j2").read_text()
    assert f"{layout.MARKER_VARIABLE}={{{{ launch_rank_marker | quote }}}}" in text
    made = re.search(r"{% set launch_rank_marker = (.+?) %}", text)
    assert made, "launch.sh.j2 no longer sets launch_rank_marker"
    rendered = jinja2.Environment().from_string("{{ " + made.group(1) + " }}").render(
        launch_job_id=JOB, launch_rank=RANK, launch_attempt=ATTEMPT)
    assert rendered == layout.marker(JOB, RANK, ATTEMPT)


# ------------------------------------------------------------- imports


def _imports(path: Path) -> set[str]:
    """tsubmit modules PATH imports, function-level imports included."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tsubmit"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tsubmit"):
            found.add(node.module)
    return found


def test_the_package_has_no_import_cycle():
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    # The CLI is the top: it may import anything, nothing imports it.
    graph = {name: deps for name, deps in graph.items() if not name.startswith("tsubmit.cli")}
    cycles = []

    def visit(name, trail):
        if name in trail:
            cycles.append(" -> ".join([*trail[trail.index(name):], name]))
            return
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*trail, name])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


# The sub-packages are layers, top to bottom (docs/explanation/architecture.md):
# a module imports from its own sub-package and those below it, never from one
# above; the leaves (errors, interrupts, output, paths) import no sub-package.
LAYERS = ("cli", "jobs", "optuna", "nodes", "local", "model")
LEAVES = ("errors", "interrupts", "output", "paths")


def _layer(module: str) -> int | None:
    """Where MODULE stands (0 the top), or None for the package's entry points."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in LAYERS and len(parts) > 2:
        return LAYERS.index(parts[1])
    return len(LAYERS) if parts[1] in LEAVES else None


def test_imports_flow_down_the_sub_packages():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        here = _layer(module)
        if here is None:
            continue
        for target in _imports(path):
            there = _layer(target)
            if there is not None and there < here:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(set(upward)))


def test_every_module_lives_in_a_sub_package_or_is_a_leaf():
    flat = sorted(path.stem for path in PACKAGE.glob("*.py")
                  if path.stem not in (*LEAVES, "__init__", "__main__", "archive_cli"))
    assert not flat, f"modules outside the sub-packages: {flat} (docs/explanation/architecture.md says where)"
