"""The style gates run with the tests: ruff over the Python, ansible-lint's
production profile over the whole repository, as an operator runs it at the
top (galaxy.yml, meta/, roles/, playbooks/, examples/)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_passes():
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_passes():
    # Ansible settings of the test process (other tests may set some) stay out of it.
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    # No path given: ansible-lint takes the project as a whole, as at the top of
    # a collection (galaxy.yml and meta/ included), not only roles/ and playbooks/.
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor"],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _assigned(path: Path) -> dict:
    """The module-level NAME = ... assignments of a Python file, as AST nodes."""
    import ast

    return {node.targets[0].id: node.value for node in ast.parse(path.read_text()).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


def test_every_module_documentation_parses_and_names_the_actions_options():
    """ansible-doc fails on a module whose DOCUMENTATION is not YAML (a ": " in a
    plain sentence is enough), and ansible-lint does not notice; the options
    documented are the ones the action plugin accepts."""
    import ast

    import yaml

    modules = sorted((REPO / "plugins" / "modules").glob("*.py"))
    assert modules
    for module in modules:
        assigned = _assigned(module)
        parts = {name: yaml.safe_load(ast.literal_eval(assigned[name]))
                 for name in ("DOCUMENTATION", "EXAMPLES", "RETURN") if name in assigned}
        assert parts.get("DOCUMENTATION"), module.name
        action = REPO / "plugins" / "action" / module.name
        spec = _assigned(action).get("ARGUMENT_SPEC") if action.exists() else None
        if isinstance(spec, ast.Dict):
            accepted = {ast.literal_eval(key) for key in spec.keys}
            assert set(parts["DOCUMENTATION"].get("options") or {}) == accepted, module.name
