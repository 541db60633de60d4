"""Which of submit.yml's steps `tsubmit run` skips for a job: the tagged ones it has
nothing for, and the roles' argument-spec validation when it checked every input."""

from tsubmit.jobs.plan import Plan, unused_steps
from tsubmit.model.job import Job
from tsubmit.nodes.clusters import ClusterRef, Node, ResolvedCluster
from tsubmit.nodes.hooks import kinds_used


def job(executor: str) -> Job:
    return Job(id="j", name="n", cluster="c", inventory={"sources": []}, executor=executor,
               command=["python", "x.py"], workdir="/tmp")


def test_a_plain_job_skips_every_optional_step():
    assert unused_steps(job("distributed"), set()) == ["optuna", "pre_launch_hooks", "post_launch_hooks"]


def test_a_step_runs_when_the_job_needs_it():
    assert unused_steps(job("optuna"), {"pre_launch_roles"}) == ["post_launch_hooks"]
    assert unused_steps(job("torchrun"), {"pre_launch_tasks", "post_launch_tasks"}) == ["optuna"]
    # on-stop hooks belong to the stop and cleanup playbooks, not to the submit
    assert unused_steps(job("torchrun"), {"on_stop_tasks"}) == ["optuna", "pre_launch_hooks",
                                                                "post_launch_hooks"]


def test_hook_kinds_come_from_any_host_and_from_the_job():
    hosts = {"a": {"tsubmit_post_launch_tasks": ["/hooks/post.yml"]}, "b": {"tsubmit_pre_launch_tasks": []}}
    job_vars = {"tsubmit_job_pre_launch_roles": ["site.prepare"]}
    assert kinds_used(hosts, job_vars) == {"post_launch_tasks", "pre_launch_roles"}
    assert kinds_used({"a": {}}, {}) == set()


def plan_on(*host_vars: dict) -> Plan:
    nodes = [Node(f"n{rank}", rank, f"10.0.0.{rank + 1}", None, variables)
             for rank, variables in enumerate(host_vars)]
    return Plan(job("distributed"), ResolvedCluster(ClusterRef("c", []), nodes, "first host"))


def test_the_roles_validation_is_skipped_when_tsubmit_checked_every_input(monkeypatch):
    monkeypatch.delenv("TSUBMIT_ANSIBLE_PATH", raising=False)
    assert plan_on({"tsubmit_python": "/usr/bin/python3"}, {}).role_validation() == {
        "tsubmit_validate_roles": False}


def test_a_replaced_role_keeps_the_validation(monkeypatch, tmp_path):
    (tmp_path / "hooks").mkdir()
    monkeypatch.setenv("TSUBMIT_ANSIBLE_PATH", str(tmp_path))
    assert plan_on({}).role_validation() == {"tsubmit_validate_roles": False}
    (tmp_path / "launch").mkdir()
    assert plan_on({}).role_validation() == {}
