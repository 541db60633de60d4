"""Each executor has one home on each side: tsubmit/model/executors.py on the
controller, plugins/plugin_utils/executors.py and its template
roles/launch/templates/executors/<name>.sh.j2 on the nodes' side; what
decides by the executor reads those, never the executor's name."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tsubmit.errors import UsageError
from tsubmit.jobs.plan import Plan, extravars, unused_steps
from tsubmit.jobs.preview import describe
from tsubmit.jobs.request import RunRequest, validate_request
from tsubmit.model import executors, jobspec
from tsubmit.model.collection import plugin_utils
from tsubmit.nodes.clusters import ClusterRef, Node, ResolvedCluster

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "roles" / "launch" / "templates" / "executors"
NODE_SIDE = plugin_utils("executors")


def test_every_executor_runs_a_node_side_executor_that_has_its_template():
    assert {executor.runs for executor in executors.TABLE} == set(NODE_SIDE.EXECUTORS)
    assert {path.name for path in TEMPLATES.iterdir()} == {f"{name}.sh.j2" for name in NODE_SIDE.EXECUTORS}


@pytest.mark.parametrize("role", ["launch", "preflight"])
def test_the_roles_accept_exactly_the_node_side_executors(role):
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert options["tsubmit_job_executor"]["choices"] == list(NODE_SIDE.EXECUTORS)


def test_an_unknown_node_side_executor_is_named_with_the_choices():
    named = "unknown executor 'mpirun'; choose one of torchrun, distributed, optuna"
    with pytest.raises(ValueError, match=named):
        NODE_SIDE.traits("mpirun")


def test_run_help_offers_and_explains_every_executor():
    shown = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--help"], capture_output=True,
                           text=True, check=True).stdout
    assert "--executor [torchrun|distributed|docker|optuna]" in shown
    explained = " ".join(shown.split())  # click wraps the help
    for executor in executors.TABLE:
        assert f"{executor.name}: {executor.help}" in explained


def test_the_spec_key_and_its_schema_take_every_executor():
    assert jobspec.BY_KEY["executor"].choices == executors.NAMES
    schema = json.loads(jobspec.SCHEMA_FILE.read_text())
    assert schema["properties"]["executor"]["enum"] == list(executors.NAMES)


def _request(tmp_path, **fields) -> RunRequest:
    return RunRequest(command=["python", "train.py"], cluster=ClusterRef("c", ["inv.yml"]), workdir=tmp_path,
                      **fields)


def test_docker_without_an_image_is_refused_naming_image(tmp_path):
    with pytest.raises(UsageError, match="--executor docker runs the command in a container: give --image"):
        validate_request(_request(tmp_path, executor="docker"))


def _plan(executor: str, image: str | None) -> Plan:
    from tsubmit.model.job import Job, Rank

    nodes = [Node(f"n{rank}", rank, f"10.0.0.{rank + 1}", 1, {}) for rank in range(2)]
    cluster = ResolvedCluster(ClusterRef("c", ["inv.yml"]), nodes, "first host")
    extras = {"container": {"image": image, "args": [], "pull": "missing"}} if image else {}
    job = Job(id="abc123def0", name="n", cluster="c", inventory={"sources": ["inv.yml"]}, executor=executor,
              command=["python", "train.py"], workdir="/w", extras=extras,
              ranks=[Rank(node.rank, node.name, node.address, 1) for node in nodes])
    return Plan(job, cluster)


def test_docker_is_recorded_as_asked_and_runs_distributed_in_its_container(tmp_path):
    request = validate_request(_request(tmp_path, executor="docker", image="team/train:3"))
    assert request.executor == "docker"  # what `list` and `status` show
    docker, distributed = _plan("docker", "team/train:3"), _plan("distributed", "team/train:3")
    shipped = extravars(docker.job, None)
    assert shipped["tsubmit_job_executor"] == "distributed"  # what the roles run
    assert shipped["tsubmit_job_meta"]["executor"] == "docker"
    assert [rank["command"] for rank in describe(docker)["ranks"]] == \
           [rank["command"] for rank in describe(distributed)["ranks"]]
    assert describe(docker)["ranks"][1]["command"].endswith("team/train:3 python train.py")


@pytest.mark.parametrize("name", executors.NAMES)
def test_only_a_study_store_executor_keeps_the_optuna_step(name):
    assert ("optuna" in unused_steps(_plan(name, None).job, set())) != executors.get(name).study_store


# What a branch on an executor's name looks like, in Python and in Jinja.
_NAME_BRANCH = re.compile(r"""executor\w*(?:["']\])?\s*(?:\|\s*default\([^)]*\)\s*)?"""
                          r"""(?:==|!=|\bin\b)\s*["'(\[]"""
                          r"""|["'](?:torchrun|distributed|docker|optuna)["']\s*(?:==|!=)\s*\w*executor""")
_TABLES = {REPO / "tsubmit" / "executors.py", REPO / "plugins" / "plugin_utils" / "executors.py"}


def test_nothing_else_branches_on_an_executors_name():
    found = []
    for folder, pattern in (("tsubmit", "*.py"), ("plugins", "*.py"), ("roles", "*.j2"), ("roles", "*.yml"),
                            ("playbooks", "*.yml")):
        for path in sorted((REPO / folder).rglob(pattern)):
            if path in _TABLES or "optuna_store/files" in str(path):  # the store's own code, not a branch
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _NAME_BRANCH.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == [], "read the executor tables instead:\n" + "\n".join(found)
