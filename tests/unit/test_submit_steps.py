"""Which of submit.yml's tagged steps `tsubmit run` skips for a job."""

from tsubmit.hooks import kinds_used
from tsubmit.job import Job
from tsubmit.submit import unused_steps


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
