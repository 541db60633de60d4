"""The shape of the code that no e2e test sees at once: the controller reads
task results by task name, and the package's imports flow one way."""

import ast
import re
from pathlib import Path

import pytest

from tsubmit import check, lifecycle, node_actions, optuna, submit

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "tsubmit"
TASK_NAMES = [*submit.START_TASKS, lifecycle.STATUS_TASK, lifecycle.SETUP_GC_TASK, node_actions.STOP_TASK,
              check.PROBE_TASK,
              check.LISTEN_TASK, check.CONNECT_TASK, optuna.SUMMARY_TASK, optuna.SNAPSHOT_TASK,
              optuna.DASHBOARD_TASK]


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
