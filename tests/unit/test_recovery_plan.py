"""The nodes of a job's next attempt when nodes are lost (tsubmit/jobs/recovery_plan.py):
spares take lost ranks, else the job goes on with fewer nodes down to --min-nodes,
else it cannot go on. Pure planning: nothing here touches a node."""

import pytest
import yaml

from tsubmit.errors import EXIT_USAGE
from tsubmit.jobs.recovery_plan import NotEnoughNodes, lost_hosts, next_plan
from tsubmit.local.store import JobStore
from tsubmit.model.job import Job, Rank
from tsubmit.model.states import State


@pytest.fixture
def inventory(tmp_path):
    hosts = {f"n{i}": {"ansible_host": f"127.0.9.{i}"} for i in (1, 2, 3)}
    hosts.update({f"s{i}": {"ansible_host": f"127.0.9.{10 + i}", "tsubmit_spare": True} for i in (1, 2)})
    path = tmp_path / "cluster.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    return str(path)


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "jobs.sqlite")


def job_on(inventory, hosts, *, min_nodes=None, job_id="j1", state=State.RUNNING) -> Job:
    return Job(id=job_id, name=job_id, cluster="c", inventory={"sources": [inventory]},
               executor="distributed", command=["true"], workdir="/tmp", state=state,
               extras={"recovery": {"min_nodes": min_nodes}} if min_nodes else {},
               ranks=[Rank(number, host, f"addr-{host}", nproc=1, state=state)
                      for number, host in enumerate(hosts)])


def ranks_of(plan) -> list[tuple[int, str]]:
    return [(node.rank, node.name) for node in plan.cluster.nodes]


def test_a_spare_takes_the_lost_rank_and_keeps_its_number(inventory, store):
    plan = next_plan(job_on(inventory, ["n1", "n2", "n3"]), ["n2"], store=store)
    assert ranks_of(plan) == [(0, "n1"), (1, "s1"), (2, "n3")]
    spare = plan.cluster.nodes[1]
    assert spare.address == "127.0.9.11" and spare.vars["tsubmit_spare"] is True
    assert plan.cluster.nodes[0].address == "addr-n1"  # a kept node as it was launched
    assert plan.cluster.spares == ["s2"]  # still free


def test_a_spare_another_job_runs_on_or_found_silent_is_not_free(inventory, store):
    store.save(job_on(inventory, ["s1"], job_id="other"))
    store.note_contact(set(), {"s2"})
    with pytest.raises(NotEnoughNodes):
        next_plan(job_on(inventory, ["n1", "n2", "n3"]), ["n2"], store=store)
    store.note_contact({"s2"}, set())
    assert ranks_of(next_plan(job_on(inventory, ["n1", "n2", "n3"]), ["n2"], store=store))[1] == (1, "s2")


def test_an_ended_job_leaves_its_spare_free(inventory, store):
    store.save(job_on(inventory, ["s1"], job_id="other", state=State.SUCCEEDED))
    assert ranks_of(next_plan(job_on(inventory, ["n1", "n2"]), ["n2"], store=store))[1] == (1, "s1")


def test_a_spare_that_takes_rank_0_is_the_head(inventory, store):
    plan = next_plan(job_on(inventory, ["n1", "n2", "n3"]), ["n1"], store=store)
    assert ranks_of(plan) == [(0, "s1"), (1, "n2"), (2, "n3")]
    assert "s1 holds rank 0, so it is the head" in plan.cluster.head_reason


def test_without_a_spare_min_nodes_goes_on_with_the_survivors_renumbered(inventory, store):
    store.save(job_on(inventory, ["s1"], job_id="a"), job_on(inventory, ["s2"], job_id="b"))
    plan = next_plan(job_on(inventory, ["n1", "n2", "n3"], min_nodes=2), ["n2"], store=store)
    assert ranks_of(plan) == [(0, "n1"), (1, "n3")]
    assert "rank 1 of lost n2 is dropped" in plan.cluster.head_reason


def test_a_lost_head_without_a_spare_makes_the_first_survivor_the_head(inventory, store):
    store.save(job_on(inventory, ["s1"], job_id="a"), job_on(inventory, ["s2"], job_id="b"))
    plan = next_plan(job_on(inventory, ["n1", "n2", "n3"], min_nodes=1), ["n1"], store=store)
    assert ranks_of(plan) == [(0, "n2"), (1, "n3")]
    assert "n2 holds rank 0" in plan.cluster.head_reason


def test_spares_first_then_fewer_nodes(inventory, store):
    store.save(job_on(inventory, ["s2"], job_id="b"))
    plan = next_plan(job_on(inventory, ["n1", "n2", "n3"], min_nodes=2), ["n1", "n3"], store=store)
    assert ranks_of(plan) == [(0, "s1"), (1, "n2")]


def test_below_min_nodes_and_no_spare_names_the_lost_hosts(inventory, store):
    store.save(job_on(inventory, ["s1"], job_id="a"), job_on(inventory, ["s2"], job_id="b"))
    with pytest.raises(NotEnoughNodes) as refused:
        next_plan(job_on(inventory, ["n1", "n2", "n3"]), ["n2", "n3"], store=store)
    assert refused.value.exit_code == EXIT_USAGE
    assert str(refused.value) == ("lost nodes n2, n3: no free spare is left to take their ranks; nodes "
                                  "left: 1 of 3, fewer than --min-nodes 3")


def test_no_lost_node_plans_the_same_nodes(inventory, store):
    assert ranks_of(next_plan(job_on(inventory, ["n1", "n2"]), [], store=store)) == [(0, "n1"), (1, "n2")]


def test_a_node_is_lost_once_silent_for_longer_than_the_node_timeout(inventory):
    job = job_on(inventory, ["n1", "n2", "n3"])
    job.extras["recovery"] = {"node_timeout": 60.0}
    for rank, since in zip(job.ranks[1:], (1000.0, 1030.0), strict=True):
        rank.move_to(State.UNREACHABLE)
        rank.unreachable_since = since
    assert lost_hosts(job, now=1060.0) == []  # silent for 60 s: not longer
    assert lost_hosts(job, now=1061.0) == ["n2"]
    assert lost_hosts(job, now=1091.0) == ["n2", "n3"]
    job.extras = {}  # the default: 2 minutes
    assert lost_hosts(job, now=1121.0) == ["n2"]
