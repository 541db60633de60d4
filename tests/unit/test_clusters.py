"""Clusters are Ansible inventories: writing them, and reading them back in rank order."""

import sys
from pathlib import Path

import pytest
import yaml

from tsubmit.errors import EXIT_USAGE, UsageError
from tsubmit.nodes import clusters
from tsubmit.nodes.clusters import (
    ClusterRef,
    cluster_names,
    cluster_path,
    cluster_ref,
    parse_host,
    remove_cluster,
    resolve,
    write_cluster,
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path / "home"))
    # load_inventory writes ANSIBLE_CONFIG into os.environ; have monkeypatch restore it.
    monkeypatch.setenv("ANSIBLE_CONFIG", "")
    return tmp_path / "home"


def inventory(tmp_path: Path, data: dict, name: str = "inv.yml") -> ClusterRef:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return ClusterRef("test", [str(path)])


def hosts(*names: str, **common) -> dict:
    return {name: {"ansible_host": f"10.0.0.{i}", **common} for i, name in enumerate(names, 1)}


def order(resolved) -> list[str]:
    return [node.name for node in resolved.nodes]


# --- parse_host --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("alice@gpu1:2222", ("alice", "gpu1", 2222)),
        ("gpu1", (None, "gpu1", None)),
        ("gpu1.example.com:22", (None, "gpu1.example.com", 22)),
        ("bob@10.0.0.5", ("bob", "10.0.0.5", None)),
        ("[::1]:22", (None, "::1", 22)),
        ("[fe80::1]", (None, "fe80::1", None)),
        ("root@[::1]:2201", ("root", "::1", 2201)),
        ("  padded  ", (None, "padded", None)),
        ("h:65535", (None, "h", 65535)),
        ("h:1", (None, "h", 1)),
    ],
)
def test_parse_host_forms(spec, expected):
    assert parse_host(spec) == expected


@pytest.mark.parametrize("spec", ["h:0", "h:65536", "h:99999"])
def test_parse_host_bad_port(spec):
    with pytest.raises(UsageError, match="invalid port") as info:
        parse_host(spec)
    assert repr(spec) in str(info.value)


@pytest.mark.parametrize(
    "spec", ["", "a b", "h:abc", "h:", "user@", "@h", "a@b@c", "::1", "[::1", "h:-1", "[zz]:22"]
)
def test_parse_host_garbage(spec):
    with pytest.raises(UsageError, match=r"invalid host .*expected \[USER@\]HOST\[:PORT\]") as info:
        parse_host(spec)
    assert info.value.exit_code == EXIT_USAGE


# --- write_cluster -----------------------------------------------------------------


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_write_cluster_head_first_with_host_and_cluster_vars(tmp_path, home):
    key = tmp_path / "id_test"
    key.write_text("key")
    path = write_cluster(
        "gpus",
        "alice@head.example:2201",
        ["w1", "bob@w2:2202"],
        gpus=4,
        identity_file=str(key),
        rdzv_addresses={"w1": "192.168.1.7"},
        python="/opt/venv/bin/python",
        torchrun="/opt/venv/bin/torchrun",
    )
    assert path == home / "config" / "clusters" / "gpus.yml"
    data = read(path)["all"]
    assert list(data["hosts"]) == ["head.example", "w1", "w2"]
    assert data["hosts"]["head.example"] == {
        "ansible_host": "head.example",
        "ansible_port": 2201,
        "ansible_user": "alice",
    }
    assert data["hosts"]["w1"] == {"ansible_host": "w1", "tsubmit_rdzv_address": "192.168.1.7"}
    assert data["hosts"]["w2"] == {"ansible_host": "w2", "ansible_port": 2202, "ansible_user": "bob"}
    assert data["vars"] == {
        "tsubmit_gpus": 4,
        "ansible_ssh_private_key_file": str(key.resolve()),
        "tsubmit_python": "/opt/venv/bin/python",
        "ansible_python_interpreter": "/opt/venv/bin/python",
        "tsubmit_torchrun": "/opt/venv/bin/torchrun",
    }


def test_identity_file_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("key")
    monkeypatch.chdir(tmp_path)
    data = read(write_cluster("c", "h", [], identity_file="keys/id"))
    assert data["all"]["vars"]["ansible_ssh_private_key_file"] == str(tmp_path / "keys" / "id")


def test_a_minimal_cluster_has_no_vars(home):
    data = read(write_cluster("c", "h", []))
    assert data == {"all": {"hosts": {"h": {"ansible_host": "h"}}}}


def test_the_same_host_twice_gets_distinct_inventory_names():
    data = read(write_cluster("c", "127.0.0.1:2201", ["127.0.0.1:2202"]))
    names = list(data["all"]["hosts"])
    assert len(names) == 2 and names[0] == "127.0.0.1"
    assert [h["ansible_port"] for h in data["all"]["hosts"].values()] == [2201, 2202]


def test_a_derived_host_name_never_replaces_another_host():
    # The second "h" would be named "h-2", which is already the worker given before it.
    data = read(write_cluster("c", "h:2201", ["h-2", "h:2202"]))
    assert len(data["all"]["hosts"]) == 3
    assert [v.get("ansible_port") for v in data["all"]["hosts"].values()] == [2201, None, 2202]


def test_written_cluster_resolves_in_the_order_given():
    write_cluster("c", "head", ["w2", "w1"], gpus=2)
    resolved = resolve(cluster_ref("c"))
    assert order(resolved) == ["head", "w2", "w1"]
    assert [node.rank for node in resolved.nodes] == [0, 1, 2]
    assert {node.gpus for node in resolved.nodes} == {2}


def nothing_written(home: Path) -> bool:
    directory = home / "config" / "clusters"
    return not directory.exists() or list(directory.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rdzv_addresses": {"nothere": "10.1.1.1"}},
         "--rdzv-address names hosts not in the cluster: nothere"),
        ({"identity_file": "/nonexistent/id_rsa"}, "identity file /nonexistent/id_rsa is not readable"),
        ({"gpus": 0}, "--gpus must be at least 1"),
        ({"workers": ["bad host"]}, "invalid host 'bad host'"),
        ({"head": "h:0"}, "invalid port"),
    ],
)
def test_bad_cluster_is_rejected_and_nothing_is_written(home, kwargs, message):
    args = {"head": "h", "workers": ["w"], **kwargs}
    with pytest.raises(UsageError, match=message):
        write_cluster("c", args.pop("head"), args.pop("workers"), **args)
    assert nothing_written(home)


def test_identity_file_that_is_a_directory_is_rejected(tmp_path, home):
    # Checked by name only as "readable", a directory would pass and fail later inside ssh.
    with pytest.raises(UsageError, match="identity file"):
        write_cluster("c", "h", [], identity_file=str(tmp_path))
    assert nothing_written(home)


def test_duplicate_cluster_name_is_rejected_and_the_first_is_kept():
    path = write_cluster("c", "first", [])
    with pytest.raises(UsageError, match="cluster 'c' already exists"):
        write_cluster("c", "second", [])
    assert list(read(path)["all"]["hosts"]) == ["first"]


def test_local_is_reserved(home):
    with pytest.raises(UsageError, match="'local' is the embedded cluster"):
        write_cluster("local", "h", [])
    with pytest.raises(UsageError, match="cannot be removed"):
        remove_cluster("local")
    assert nothing_written(home)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "-dash", "x" * 64, "sp ace"])
def test_invalid_cluster_names(home, name):
    with pytest.raises(UsageError, match="invalid cluster name"):
        write_cluster(name, "h", [])
    with pytest.raises(UsageError, match="invalid cluster name"):
        cluster_ref(name)
    assert nothing_written(home)
    assert not (home / "config" / "escape.yml").exists()


def test_cluster_names_and_remove():
    write_cluster("b", "h", [])
    write_cluster("a", "h", [])
    assert cluster_names() == ["local", "a", "b"]
    remove_cluster("a")
    assert cluster_names() == ["local", "b"]
    with pytest.raises(UsageError, match="unknown cluster 'a'"):
        remove_cluster("a")


def test_unknown_cluster_lists_the_known_ones():
    write_cluster("gpus", "h", [])
    with pytest.raises(UsageError, match=r"unknown cluster 'nope'; known clusters: local, gpus"):
        cluster_ref("nope")


# --- resolve -----------------------------------------------------------------------


def test_ranks_follow_inventory_order(tmp_path):
    resolved = resolve(inventory(tmp_path, {"all": {"hosts": hosts("c", "a", "b")}}))
    assert order(resolved) == ["c", "a", "b"]
    assert [n.rank for n in resolved.nodes] == [0, 1, 2]
    assert [n.address for n in resolved.nodes] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert resolved.head_reason == "first host of group all"


def test_head_by_tsubmit_head_var(tmp_path):
    data = {"all": {"hosts": hosts("a", "b", "c")}}
    data["all"]["hosts"]["c"]["tsubmit_head"] = True
    resolved = resolve(inventory(tmp_path, data))
    assert order(resolved) == ["c", "a", "b"]
    assert resolved.head_reason == "tsubmit_head is set on it"


@pytest.mark.parametrize("value", [True, "yes", "true", "True", 1])
def test_tsubmit_head_truthy_spellings(tmp_path, value):
    data = {"all": {"hosts": hosts("a", "b")}}
    data["all"]["hosts"]["b"]["tsubmit_head"] = value
    assert order(resolve(inventory(tmp_path, data)))[0] == "b"


def test_tsubmit_head_false_is_ignored(tmp_path):
    data = {"all": {"hosts": hosts("a", "b")}}
    data["all"]["hosts"]["a"]["tsubmit_head"] = False
    assert order(resolve(inventory(tmp_path, data))) == ["a", "b"]


def test_two_flagged_heads_are_rejected(tmp_path):
    data = {"all": {"hosts": hosts("a", "b", "c", tsubmit_head=True)}}
    with pytest.raises(UsageError, match="several hosts set tsubmit_head: a, b, c"):
        resolve(inventory(tmp_path, data))


def test_head_by_group_named_after_the_cluster_group(tmp_path):
    data = {
        "all": {
            "children": {
                "trainers": {"hosts": hosts("t1", "t2", "t3")},
                "trainers_head": {"hosts": {"t3": {}}},
                "tsubmit_head": {"hosts": {"t2": {}}},
            }
        }
    }
    ref = inventory(tmp_path, data)
    resolved = resolve(ClusterRef("test", ref.sources, group="trainers"))
    assert order(resolved) == ["t3", "t1", "t2"]
    assert resolved.head_reason == "first host of group trainers_head"


def test_head_by_tsubmit_head_group(tmp_path):
    data = {"all": {"hosts": hosts("a", "b", "c"), "children": {"tsubmit_head": {"hosts": {"b": {}}}}}}
    resolved = resolve(inventory(tmp_path, data))
    assert order(resolved) == ["b", "a", "c"]
    assert resolved.head_reason == "first host of group tsubmit_head"


def test_head_group_outside_the_selection_is_ignored(tmp_path):
    data = {
        "all": {
            "children": {
                "trainers": {"hosts": hosts("t1", "t2")},
                "other": {"hosts": {"x": {"ansible_host": "10.0.0.9"}}},
                "tsubmit_head": {"hosts": {"x": {}}},
            }
        }
    }
    ref = inventory(tmp_path, data)
    resolved = resolve(ClusterRef("test", ref.sources, group="trainers"))
    assert order(resolved) == ["t1", "t2"]
    assert resolved.head_reason == "first host of group trainers"


def test_the_var_wins_over_the_group(tmp_path):
    data = {"all": {"hosts": hosts("a", "b", "c"), "children": {"tsubmit_head": {"hosts": {"b": {}}}}}}
    data["all"]["hosts"]["c"]["tsubmit_head"] = True
    resolved = resolve(inventory(tmp_path, data))
    assert order(resolved)[0] == "c"
    assert resolved.head_reason == "tsubmit_head is set on it"


def test_limit_and_empty_selection(tmp_path):
    ref = inventory(tmp_path, {"all": {"hosts": hosts("a", "b", "c")}})
    limited = resolve(ClusterRef("test", ref.sources, limit="b:c"))
    assert order(limited) == ["b", "c"]
    with pytest.raises(UsageError, match=r"group 'gpus' is not in .*inv.yml"):
        resolve(ClusterRef("test", ref.sources, group="gpus"))
    with pytest.raises(UsageError, match=r"group 'all' with --limit 'nothing\*' of .* has no hosts"):
        resolve(ClusterRef("test", ref.sources, limit="nothing*"))


def test_rdzv_address_and_localhost_addresses(tmp_path):
    data = {
        "all": {
            "hosts": {
                "a": {"ansible_host": "10.0.0.1", "tsubmit_rdzv_address": "192.168.0.1"},
                "b": {"ansible_host": "localhost"},
                "c": {},
            }
        }
    }
    resolved = resolve(inventory(tmp_path, data))
    assert [n.address for n in resolved.nodes] == ["192.168.0.1", "127.0.0.1", "c"]


@pytest.mark.parametrize(("value", "expected"), [(4, 4), ("8", 8), (None, None)])
def test_gpus_var(tmp_path, value, expected):
    extra = {} if value is None else {"tsubmit_gpus": value}
    [node] = resolve(inventory(tmp_path, {"all": {"hosts": hosts("a", **extra)}})).nodes
    assert node.gpus == expected


@pytest.mark.parametrize("value", ["many", 0, -1, True, 1.5, "2 "])
def test_bad_gpus_var_names_host_and_variable(tmp_path, value):
    data = {"all": {"hosts": hosts("a", "gpu7")}}
    data["all"]["hosts"]["gpu7"]["tsubmit_gpus"] = value
    with pytest.raises(UsageError, match="host gpu7: tsubmit_gpus must be a whole number") as info:
        resolve(inventory(tmp_path, data))
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("env", [{"1X": "a"}, {"A-B": "a"}, ["A=1"], "A=1"])
def test_bad_tsubmit_env_is_rejected(tmp_path, env):
    data = {"all": {"hosts": hosts("a"), "vars": {"tsubmit_env": env}}}
    with pytest.raises(UsageError, match="host a: tsubmit_env must map variable names"):
        resolve(inventory(tmp_path, data))


def test_good_tsubmit_env_is_kept(tmp_path):
    data = {"all": {"hosts": hosts("a"), "vars": {"tsubmit_env": {"NCCL_SOCKET_IFNAME": "eth0"}}}}
    [node] = resolve(inventory(tmp_path, data)).nodes
    assert node.vars["tsubmit_env"] == {"NCCL_SOCKET_IFNAME": "eth0"}


def test_missing_identity_file_in_an_inventory_is_rejected(tmp_path):
    data = {"all": {"hosts": hosts("a"), "vars": {"ansible_ssh_private_key_file": "/nonexistent/key"}}}
    with pytest.raises(UsageError, match="host a: identity file /nonexistent/key is not readable"):
        resolve(inventory(tmp_path, data))


def test_missing_inventory_and_broken_inventory(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve(ClusterRef("test", [str(tmp_path / "missing.yml")]))
    broken = tmp_path / "broken.yml"
    broken.write_text("all:\n  hosts: [unclosed\n")
    with pytest.raises(UsageError) as info:
        resolve(ClusterRef("test", [str(broken)]))
    assert "\n" not in str(info.value)


def test_local_cluster_is_localhost():
    ref = cluster_ref("local")
    assert Path(ref.sources[0]).is_file()
    resolved = resolve(ref)
    [node] = resolved.nodes
    assert (node.name, node.rank, node.address, node.gpus) == ("localhost", 0, "127.0.0.1", None)
    # The embedded inventory's template is resolved the way ansible-playbook will resolve it.
    assert node.vars["tsubmit_python"] == sys.executable
    assert resolved.head_reason == "first host of group all"


# --- the plain YAML reader ---------------------------------------------------------

# What Ansible adds to every host's variables, which tsubmit does not read.
ANSIBLE_MAGIC = {"ansible_config_file", "ansible_facts", "ansible_playbook_python", "ansible_version",
                 "group_names", "groups", "inventory_dir", "inventory_file", "inventory_hostname_short",
                 "playbook_dir"}


def through_ansible(ref: ClusterRef, monkeypatch) -> clusters.ResolvedCluster:
    with monkeypatch.context() as patched:
        patched.setattr(clusters, "_plain_yaml_hosts", lambda ref: None)
        return resolve(ref)


@pytest.mark.parametrize("data", [
    {"all": {"hosts": hosts("c", "a", "b")}},
    {"all": {"hosts": {"a": {"tsubmit_gpus": 4, "tsubmit_env": {"X": "1"}}, "b": None},
             "vars": {"tsubmit_gpus": 2, "ansible_user": "ml", "tsubmit_torchrun": "/opt/bin/torchrun"}}},
    {"all": {"hosts": {**hosts("a", "b"), "c": {"ansible_host": "10.0.0.9", "tsubmit_head": "yes",
                                                "tsubmit_rdzv_address": "192.168.1.9"}}}},
    {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                     "tsubmit_python": "{{ ansible_playbook_python }}"}}}},
], ids=["plain", "all.vars", "tsubmit_head", "local"])
def test_an_inventory_of_the_written_shape_is_read_as_ansible_reads_it(tmp_path, monkeypatch, data):
    ref = inventory(tmp_path, data)
    assert clusters._plain_yaml_hosts(ref) is not None
    plain, ansible = resolve(ref), through_ansible(ref, monkeypatch)
    assert plain.head_reason == ansible.head_reason
    for mine, theirs in zip(plain.nodes, ansible.nodes, strict=True):
        assert (mine.name, mine.rank, mine.address, mine.gpus) == (theirs.name, theirs.rank, theirs.address,
                                                                    theirs.gpus)
        assert mine.vars == {key: value for key, value in theirs.vars.items() if key not in ANSIBLE_MAGIC}


def test_a_written_cluster_and_the_local_one_take_the_plain_reader(home):
    write_cluster("c", "10.0.0.1", ["ml@10.0.0.2:2222"], gpus=2, python="/opt/py/bin/python3")
    assert clusters._plain_yaml_hosts(cluster_ref("c")) is not None
    assert clusters._plain_yaml_hosts(cluster_ref("local")) is not None


@pytest.mark.parametrize("data", [
    {"all": {"children": {"trainers": {"hosts": hosts("a", "b")}}}},
    {"all": {"hosts": {"node[1:3]": None}}},
    {"all": {"hosts": {"a:2222": None}}},
    {"all": {"hosts": hosts("a"), "vars": ["not", "a", "mapping"]}},
    {"ungrouped": {"hosts": hosts("a")}},
], ids=["groups", "host range", "host with port", "odd vars", "not all"])
def test_anything_else_is_left_to_ansible(tmp_path, data):
    assert clusters._plain_yaml_hosts(inventory(tmp_path, data)) is None


def test_what_could_change_ansibles_reading_is_left_to_ansible(tmp_path, monkeypatch):
    ref = inventory(tmp_path, {"all": {"hosts": hosts("a", "b")}})
    assert clusters._plain_yaml_hosts(ref) is not None
    for narrowed in (ClusterRef("t", ref.sources, limit="a"), ClusterRef("t", ref.sources, group="x"),
                     ClusterRef("t", ref.sources, vault_password_file="/v")):
        assert clusters._plain_yaml_hosts(narrowed) is None
    vaulted = tmp_path / "vaulted.yml"
    vaulted.write_text("all:\n  hosts:\n    a:\n      secret: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n")
    assert clusters._plain_yaml_hosts(ClusterRef("t", [str(vaulted)])) is None
    monkeypatch.setenv("TSUBMIT_ANSIBLE_CONFIG", "/etc/ansible/ansible.cfg")
    assert clusters._plain_yaml_hosts(ref) is None
    monkeypatch.delenv("TSUBMIT_ANSIBLE_CONFIG")
    (tmp_path / "group_vars").mkdir()
    assert clusters._plain_yaml_hosts(ref) is None


def test_cluster_path_is_under_tsubmit_home(home):
    assert cluster_path("x") == home / "config" / "clusters" / "x.yml"
