"""The SQLite job store: round trips, and finding a job by what a user types."""

import sqlite3

import pytest

from tsubmit.errors import UsageError
from tsubmit.local.store import SCHEMA_VERSION, JobStore
from tsubmit.model.job import FAILED, RUNNING, SUCCEEDED, Job, Rank


@pytest.fixture
def store(tmp_path):
    opened = JobStore(tmp_path / "state" / "jobs.sqlite")
    yield opened
    opened.close()


def make_job(job_id: str, name: str = "job", created_at: float = 1000.0, ranks: int = 2) -> Job:
    return Job(
        id=job_id,
        name=name,
        cluster="gpus",
        inventory={"sources": ["/etc/inv.yml"], "group": "all", "limit": None},
        executor="torchrun",
        command=["python", "-c", 'print("a b; $HOME")', "it's"],
        workdir="/home/u/proj",
        env={"SECRET": "x=y", "EMPTY": ""},
        gpus=4,
        max_restarts=1,
        archive="d" * 64,
        git_commit="c0ffee",
        state=RUNNING,
        attempt=2,
        message="",
        created_at=created_at,
        ranks=[
            Rank(i, f"node{i}", f"10.0.0.{i}", nproc=4, pid=100 + i, pid_start="123", state=RUNNING,
                 started_at=created_at + 1, attempt=2)
            for i in range(ranks)
        ],
    )


def test_save_and_load_round_trip(store):
    job = make_job("abc1234567")
    store.save(job)
    assert store.find("abc1234567") == job


def test_saving_again_replaces_the_job_and_its_ranks(store):
    job = make_job("abc1234567", ranks=3)
    store.save(job)
    job.state, job.ended_at, job.message = FAILED, 2000.5, "node1: boom"
    job.ranks = job.ranks[:1]
    job.ranks[0].state, job.ranks[0].exit_code = FAILED, 137
    store.save(job)
    assert store.find("abc1234567") == job
    assert len(store.jobs()) == 1


def test_delete_removes_the_ranks_too(store, tmp_path):
    store.save(make_job("abc1234567"))
    store.delete("abc1234567")
    assert store.jobs() == []
    with sqlite3.connect(tmp_path / "state" / "jobs.sqlite") as db:
        assert db.execute("SELECT count(*) FROM ranks").fetchone()[0] == 0


def test_jobs_are_listed_newest_first(store):
    for job_id, created in [("aaa", 1.0), ("bbb", 3.0), ("ccc", 2.0)]:
        store.save(make_job(job_id, created_at=created))
    assert [j.id for j in store.jobs()] == ["bbb", "ccc", "aaa"]


def test_the_store_survives_reopening(tmp_path):
    path = tmp_path / "jobs.sqlite"
    first = JobStore(path)
    first.save(make_job("abc1234567"))
    first.close()
    second = JobStore(path)
    assert second.find("abc") == make_job("abc1234567")
    second.close()


# --- find ----------------------------------------------------------------------------


@pytest.fixture
def filled(store):
    store.save(make_job("abc1230000", name="train", created_at=1.0))
    store.save(make_job("abc4560000", name="train", created_at=2.0))
    store.save(make_job("fed0000000", name="eval", created_at=3.0))
    return store


def test_find_by_full_id(filled):
    assert filled.find("abc1230000").id == "abc1230000"


@pytest.mark.parametrize(
    ("ref", "job_id"), [("abc1", "abc1230000"), ("abc4", "abc4560000"), ("f", "fed0000000")]
)
def test_find_by_unique_prefix(filled, ref, job_id):
    assert filled.find(ref).id == job_id


def test_find_by_name_gives_the_newest_of_that_name(filled):
    assert filled.find("train").id == "abc4560000"
    assert filled.find("eval").id == "fed0000000"


def test_ambiguous_prefix_lists_the_candidates(filled):
    with pytest.raises(UsageError, match="'abc' is ambiguous") as info:
        filled.find("abc")
    message = str(info.value)
    assert "abc1230000 (train)" in message and "abc4560000 (train)" in message
    assert "fed0000000" not in message


def test_a_name_that_is_also_an_id_prefix_is_ambiguous(filled):
    filled.save(make_job("0000000001", name="fed", created_at=4.0))
    with pytest.raises(UsageError, match="ambiguous") as info:
        filled.find("fed")
    assert "fed0000000 (eval)" in str(info.value) and "0000000001 (fed)" in str(info.value)


def test_a_full_id_wins_over_a_name(filled):
    filled.save(make_job("0000000001", name="fed0000000", created_at=4.0))
    assert filled.find("fed0000000").id == "fed0000000"


def test_unknown_ref(filled):
    with pytest.raises(UsageError, match=r"no job matches 'zzz'; see `tsubmit list --all`"):
        filled.find("zzz")


@pytest.mark.parametrize("ref", ["%", "_", "a%", "ab_", "%0000", "_bc", "\\", "abc\\"])
def test_like_wildcards_match_literally(filled, ref):
    with pytest.raises(UsageError, match="no job matches"):
        filled.find(ref)


def test_wildcard_characters_still_find_a_literal_name(filled):
    filled.save(make_job("9990000000", name="100%_done", created_at=5.0))
    assert filled.find("100%_done").id == "9990000000"


@pytest.mark.parametrize("ref", ["", " "])
def test_an_empty_ref_matches_nothing(store, ref):
    # With a single job, an empty prefix would otherwise select it: `tsubmit delete ''`.
    store.save(make_job("abc1234567"))
    with pytest.raises(UsageError):
        store.find(ref)


# --- the file itself -------------------------------------------------------------------


def test_wal_mode_and_schema_version(store, tmp_path):
    with sqlite3.connect(tmp_path / "state" / "jobs.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "jobs.sqlite"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(UsageError, match="newer tsubmit"):
        JobStore(path)


def test_two_stores_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "jobs.sqlite"
    one, two = JobStore(path), JobStore(path)
    job = make_job("abc1234567")
    one.save(job)
    job.state = SUCCEEDED
    two.save(job)
    assert one.find("abc1234567").state == SUCCEEDED
    one.close()
    two.close()


# --- what a refresh may write -----------------------------------------------------


def test_a_refresh_never_overwrites_what_was_saved_after_it_read(store):
    store.save(make_job("abc1234567"))
    refreshing = store.find("abc1234567")  # a `list` reads the job...
    submitter = store.find("abc1234567")
    submitter.state = "running"
    store.save(submitter)  # ...while the submitter records it running
    refreshing.state = "failed"
    assert store.save_if_unchanged(refreshing) == [refreshing]
    assert refreshing.state == "running"  # reloaded with the newer knowledge
    assert store.find("abc1234567").state == "running"


def test_a_refresh_of_an_unchanged_job_is_saved(store):
    store.save(make_job("abc1234567"))
    job = store.find("abc1234567")
    job.state = "succeeded"
    assert store.save_if_unchanged(job) == []
    assert store.find("abc1234567").state == "succeeded"
    job.state = "failed"  # the copy is current again after its own save
    assert store.save_if_unchanged(job) == []
    assert store.find("abc1234567").state == "failed"


def test_a_new_store_is_private_from_its_first_byte(tmp_path):
    path = tmp_path / "state" / "jobs.sqlite"
    JobStore(path).close()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600


# --- what is pending on the nodes ---------------------------------------------------


def stop_pending(*hosts: str, action: str = "stop") -> dict:
    return {"action": action, "hosts": list(hosts), "grace": 30, "attempt": None}


def test_a_pending_stop_survives_a_refresh_saved_meanwhile(store):
    store.save(make_job("abc1234567"))
    stopping = store.find("abc1234567")  # `stop` reads the job...
    refreshing = store.find("abc1234567")  # ...and so does a `status` loop
    refreshing.ranks[0].state = "unreachable"
    assert store.save_if_unchanged(refreshing) == []
    stopping.pending = stop_pending("node1")  # node1 did not answer the stop
    assert store.save_if_unchanged(stopping) == [stopping]
    assert stopping.pending == stop_pending("node1")
    assert stopping.ranks[0].state == "unreachable"  # the newer read is kept too
    assert store.find("abc1234567").pending == stop_pending("node1")


def test_a_refresh_that_read_no_pending_action_never_drops_one_saved_meanwhile(store):
    store.save(make_job("abc1234567"))
    refreshing = store.find("abc1234567")
    stopping = store.find("abc1234567")
    stopping.pending = stop_pending("node1")
    store.save(stopping)
    assert store.save_if_unchanged(refreshing) == [refreshing]
    assert store.find("abc1234567").pending == stop_pending("node1")


def test_a_finished_pending_action_is_dropped_unless_another_was_saved_meanwhile(store):
    job = make_job("abc1234567")
    job.pending = stop_pending("node1")
    store.save(job)
    finishing = store.find("abc1234567")
    other = store.find("abc1234567")
    other.ranks[1].state = "succeeded"
    store.save_if_unchanged(other)
    finishing.pending = None  # node1 answered
    store.save_if_unchanged(finishing)
    assert store.find("abc1234567").pending is None

    job.pending = stop_pending("node1")
    store.save(job)
    finishing = store.find("abc1234567")
    deleting = store.find("abc1234567")
    deleting.pending = stop_pending("node0", action="delete")
    store.save(deleting)
    finishing.pending = None
    store.save_if_unchanged(finishing)
    assert store.find("abc1234567").pending == stop_pending("node0", action="delete")


def test_two_pending_actions_become_the_stronger_one_on_every_host(store):
    store.save(make_job("abc1234567"))
    stopping = store.find("abc1234567")
    deleting = store.find("abc1234567")
    deleting.pending = {**stop_pending("node1", action="delete"), "grace": 10}
    store.save(deleting)
    stopping.pending = stop_pending("node0")
    store.save_if_unchanged(stopping)
    assert store.find("abc1234567").pending == {**stop_pending("node0", "node1", action="delete"),
                                                "grace": 10}
