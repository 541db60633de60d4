"""The docs site builds strictly (a warning or a broken link fails it), and its
references, generated from the code, hold every command, option and spec key."""

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import click
import click.testing
import pytest

from tests.harness.ci import missing
from tsubmit.cli import main
from tsubmit.errors import EXIT_CODES
from tsubmit.model import jobspec

REPO = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).parent / "mkdocs"
COLLECTION_README = REPO / "ansible_collections" / "tsubmit" / "cluster" / "README.md"


def docs_hooks():
    """scripts/docs_hooks.py, the site's generators (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if not MKDOCS.exists():
        missing("mkdocs is not installed: pip install -e '.[docs]'")
    site = tmp_path_factory.mktemp("site")
    build = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    return site


def page_text(site: Path, page: str) -> str:
    """The text of a built page, tags removed."""
    source = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", " ", source))


def commands(group: click.Group, path: str = "tsubmit"):
    """(path, command) of every visible command, each once under its own name."""
    seen = set()
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        if command.hidden or id(command) in seen:
            continue
        seen.add(id(command))
        yield f"{path} {command.name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {command.name}")


def test_every_command_and_option_is_in_the_reference(site):
    reference = (site / "reference" / "cli" / "index.html").read_text()
    text = page_text(site, "reference/cli")
    found = list(commands(main))
    assert len(found) > 20
    for path, command in found:
        assert f'id="{path.replace(" ", "-")}"' in reference, f"{path} has no section in the reference"
        for parameter in command.params:
            for option in getattr(parameter, "opts", []) if isinstance(parameter, click.Option) else []:
                if not parameter.hidden:
                    assert option in text, f"{path} {option} is not in the reference"


def test_every_spec_key_and_exit_code_is_in_the_reference(site):
    spec = page_text(site, "reference/job-spec")
    for field in jobspec.FIELDS:
        assert re.search(rf"\b{field.key}\b", spec), f"spec key {field.key} is not in the reference"
    codes = (site / "reference" / "exit-codes" / "index.html").read_text()
    for code in EXIT_CODES:
        assert f"<td>{code}</td>" in codes, f"exit code {code} is not in the reference"


def test_tsubmit_help_names_every_exit_code():
    shown = " ".join(click.testing.CliRunner().invoke(main, ["--help"]).output.split())
    for code, (name, _) in EXIT_CODES.items():
        assert f"{code} {name}" in shown, shown


def test_the_host_variables_are_those_of_the_roles_argument_specs(site):
    text = page_text(site, "reference/host-variables")
    for name in ("tsubmit_python", "tsubmit_torchrun", "tsubmit_remote_root", "tsubmit_gpus",
                 "tsubmit_gpu_lease_dir", "tsubmit_rdzv_address", "tsubmit_env", "tsubmit_head",
                 "tsubmit_container_engine", "tsubmit_container_run_args"):
        assert name in text, name
    roles = page_text(site, "reference/role-variables")
    for role in (REPO / "roles").glob("*/meta/argument_specs.yml"):
        assert f"tsubmit.cluster.{role.parents[1].name}" in roles, role


def test_the_collections_readme_names_every_role_and_host_variable():
    """The collection's README (Galaxy's page, written by hand) against the roles' argument
    specs, which the docs site's references are generated from."""
    assert not COLLECTION_README.is_symlink()
    readme = COLLECTION_README.read_text()
    for section in ("## Requirements", "## Role Variables", "## Example Playbook", "## How tsubmit calls"):
        assert section in readme, section
    for role in (REPO / "roles").iterdir():
        assert f"tsubmit.cluster.{role.name}`" in readme, role.name
    for name in docs_hooks().host_variable_specs():
        assert f"`{name}`" in readme, f"host variable {name} is not in the collection's README"
