"""The parts of fetch, shell and forward no e2e test can corner: the ssh command
line built from an inventory's settings, the environment picked out of a real
launch.sh, and the checks that keep a fetched tar inside its folder."""

import io
import os
import re
import shlex
import stat
import subprocess
import tarfile

import jinja2
import pytest

from tests.unit.test_render import HOSTILE_ARGS, HOSTILE_VALUES, TEMPLATES, make_cluster, make_job, variables
from tsubmit.errors import UsageError
from tsubmit.jobs.fetch_files import _check_member, _Refused, check_paths
from tsubmit.nodes import ssh
from tsubmit.nodes.ports import hex_address

# --------------------------------------------------------------------------- ssh.py

CONNECTION = {"ansible_host": "10.0.0.7", "ansible_port": 2222, "ansible_user": "alice",
              "ansible_ssh_private_key_file": "~/.ssh/id_test",
              "ansible_ssh_common_args": "-F /etc/bastion.conf -o ProxyJump='jump host'",
              "ansible_ssh_extra_args": "-o ServerAliveCountMax=3", "inventory_hostname": "gpu1"}


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1].split("=", 1)[1] for i, arg in enumerate(argv[:-1])
            if arg == "-o" and argv[i + 1].split("=", 1)[0] == name]


def test_ssh_argv_carries_the_inventory_connection_settings_in_ansible_order():
    argv = ssh.ssh_argv(ssh.connection("gpu1", CONNECTION))
    assert argv[-2:] == ["--", "10.0.0.7"]
    assert option(argv, "BatchMode") == ["yes"], "never a prompt"
    assert option(argv, "Port") == ["2222"] and option(argv, "User") == ["alice"]
    assert option(argv, "IdentityFile") == [f'"{os.path.expanduser("~/.ssh/id_test")}"']
    assert option(argv, "ConnectTimeout") == [str(ssh.DEFAULT_TIMEOUT)]
    # The inventory's own arguments, split as Ansible splits them, after tsubmit's.
    common = argv.index("-F")
    assert argv[common:common + 4] == ["-F", "/etc/bastion.conf", "-o", "ProxyJump=jump host"]
    assert argv.index("ServerAliveCountMax=3") > common
    assert argv.index("BatchMode=yes") < argv.index("Port=2222") < common


def test_aliases_and_defaults_are_ansibles():
    argv = ssh.ssh_argv(ssh.connection("gpu2", {"ansible_ssh_host": "h", "ansible_ssh_port": "22",
                                                "ansible_ssh_user": "bob", "inventory_hostname": "gpu2"}))
    assert argv[-1] == "h" and option(argv, "Port") == ["22"] and option(argv, "User") == ["bob"]
    bare = ssh.ssh_argv(ssh.connection("gpu3", {"inventory_hostname": "gpu3"}))
    assert bare[-1] == "gpu3" and not option(bare, "Port") and not option(bare, "User")


def test_the_control_socket_is_the_one_ansible_uses(tmp_path, monkeypatch):
    """A shell right after a run reuses Ansible's connection: the same socket name."""
    from ansible.plugins.connection.ssh import Connection

    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    conn = ssh.connection("gpu1", CONNECTION)
    argv = ssh.ssh_argv(conn)
    from tsubmit.nodes.ansible_env import control_dir

    ansible = Connection._create_control_path("10.0.0.7", 2222, "alice") % {"directory": control_dir()}
    assert option(argv, "ControlPath") == [ansible]
    assert option(argv, "ControlMaster") == ["auto"] and option(argv, "ControlPersist") == ["600s"]


def test_an_inventory_control_path_or_ssh_args_win(monkeypatch, tmp_path):
    monkeypatch.setenv("TSUBMIT_HOME", str(tmp_path))
    own = ssh.ssh_argv(ssh.connection("h", {**CONNECTION, "ansible_ssh_common_args": "-o ControlPath=/x/%C"}))
    assert option(own, "ControlPath") == ["/x/%C"]
    plain = ssh.ssh_argv(ssh.connection("h", {**CONNECTION, "ansible_ssh_args": "-o Compression=yes"}))
    assert option(plain, "Compression") == ["yes"]
    assert not option(plain, "ControlPath") and not option(plain, "ControlMaster")


def test_a_forward_has_a_connection_of_its_own():
    argv = ssh.forward_argv(ssh.connection("gpu1", {**CONNECTION, "ansible_ssh_common_args":
                                                    "-o ControlPath=/x/%C"}), 16006, 6006)
    # ssh keeps the first value: tsubmit's come before the inventory's.
    assert option(argv, "ControlPath")[0] == "none" and option(argv, "ControlMaster") == ["no"]
    assert option(argv, "ExitOnForwardFailure") == ["yes"]
    assert "-N" in argv and "-T" in argv
    assert argv[argv.index("-L") + 1] == "127.0.0.1:16006:127.0.0.1:6006"


def test_templates_in_connection_settings_are_rendered_like_ansible_does():
    conn = ssh.connection("gpu1", {"inventory_hostname": "gpu1", "domain": "example.org",
                                   "ansible_host": "{{ inventory_hostname }}.{{ domain }}",
                                   "ansible_user": "{{ 'ali' ~ 'ce' }}"})
    assert (conn.address, conn.user) == ("gpu1.example.org", "alice")
    with pytest.raises(UsageError, match=r"host gpu1: cannot render ansible_host"):
        ssh.connection("gpu1", {"inventory_hostname": "gpu1", "ansible_host": "{{ ansible_facts.x }}"})


def test_local_hosts_run_here_and_other_connections_are_refused():
    local = ssh.connection("localhost", {"ansible_connection": "local"})
    assert local.local
    assert ssh.command_argv(local, "echo $1", ["a b"]) == ["sh", "-c", "echo $1", "tsubmit", "a b"]
    with pytest.raises(UsageError, match=re.escape("ansible_connection=community.docker.docker")):
        ssh.connection("box", {"ansible_connection": "community.docker.docker"})


def test_remote_command_words_reach_the_node_as_data():
    words = ssh.sh_words('printf "%s|" "$@"', HOSTILE_ARGS)
    out = subprocess.run(["sh", "-c", ssh.remote_command(words)], capture_output=True, text=True,
                         check=True).stdout
    assert out == "".join(f"{arg}|" for arg in HOSTILE_ARGS)


# --------------------------------------------------------------------------- environment.sh


def render(template: str, job, cluster, rank=0) -> str:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True,
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["quote"] = lambda value: shlex.quote(str(value))
    environment.filters["basename"] = os.path.basename
    environment.filters["ternary"] = lambda value, yes, no: yes if value else no
    environment.tests["match"] = lambda value, pattern: re.match(pattern, str(value)) is not None
    return environment.get_template(template).render(
        {**variables(job, cluster, rank), "launch_attempt_dir": "/nonexistent/attempt"})


def environment_of(environment_sh: str, tmp_path) -> dict[str, str]:
    """What shell.sh's `. environment.sh` exports."""
    script = tmp_path / "environment.sh"
    script.write_text(environment_sh)
    out = subprocess.run(["sh", "-c", '. "$1" && exec env -0', "sh", str(script)], capture_output=True,
                         env={"PATH": os.environ["PATH"]}, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item)


@pytest.mark.parametrize("executor", ["distributed", "torchrun"])
def test_the_rank_environment_file_holds_every_value_as_typed(executor, tmp_path):
    cluster = make_cluster(gpus=2, tsubmit_env={"HOST_VALUE": "it's\nhost"})
    job = make_job(cluster, executor, ["true"], env=dict(HOSTILE_VALUES))
    env = environment_of(render("environment.sh.j2", job, cluster, 1), tmp_path)
    assert {key: env.get(key) for key in HOSTILE_VALUES} == HOSTILE_VALUES
    assert env["HOST_VALUE"] == "it's\nhost"
    assert (env["NODE_RANK"], env["WORLD_SIZE"], env["TSUBMIT_JOB_ID"]) == ("1", "6", "abc123def0")
    assert "TSUBMIT_RANK_MARKER" not in env, "a shell's processes are not the rank's: stop leaves them"


def test_launch_sh_sources_the_same_environment_file(tmp_path):
    cluster = make_cluster(gpus=2)
    job = make_job(cluster, "distributed", ["true"])
    assert '. "$here/environment.sh"' in render("launch.sh.j2", job, cluster)


# --------------------------------------------------------------------------- fetch paths and members


@pytest.mark.parametrize(("path", "named"), [
    ("/etc/passwd", "is absolute"), ("~root/x", "is absolute"), ("..", "goes through .."),
    ("a/../../b", "goes through .."), ("", "is not a path"), ("a\nb", "is not a path"),
])
def test_paths_that_leave_the_workdir_are_refused_here(path, named):
    with pytest.raises(UsageError, match=re.escape(named)):
        check_paths([path])


def test_paths_are_normalised_and_deduplicated():
    assert check_paths(["out/", "./out", "a//b", "."]) == ["out", "a/b", "."]


def member(name, kind=tarfile.REGTYPE, linkname="", mode=0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    return info


@pytest.mark.parametrize(("info", "named"), [
    (member("/etc/passwd"), "leaves the fetched folder"),
    (member("a/../../x"), "leaves the fetched folder"),
    (member("dev", tarfile.CHRTYPE), "special file"),
    (member("fifo", tarfile.FIFOTYPE), "special file"),
    (member("abs", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
    (member("out/up", tarfile.SYMTYPE, "../../x"), "pointing outside"),
    (member("hard", tarfile.LNKTYPE, "../x"), "hard link"),
])
def test_members_that_could_land_outside_are_refused(info, named, tmp_path):
    with pytest.raises(_Refused, match=named):
        _check_member(info, tmp_path)


def test_a_member_through_an_earlier_link_is_refused(tmp_path):
    """Links checked one by one can still add up to a way out: q -> sub, p -> q/..,
    then q -> . (each fine alone) leave p pointing above the folder."""
    os.symlink(".", tmp_path / "q")
    _check_member(member("q/fine"), tmp_path)  # the folder itself: allowed
    os.symlink("q/..", tmp_path / "p")
    with pytest.raises(_Refused, match="outside the fetched folder"):
        _check_member(member("p/x"), tmp_path)


def test_kept_members_lose_set_id_bits_and_become_the_users(tmp_path):
    info = member("tool", mode=0o6755)
    info.uid = info.gid = 0
    _check_member(info, tmp_path)
    assert info.mode == 0o755 and (info.uid, info.gid) == (os.getuid(), os.getgid())
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as writer:
        writer.addfile(info, io.BytesIO(b""))
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r|") as reader:
        for item in reader:
            reader.extract(item, tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "tool").st_mode) == 0o755


def test_listener_addresses_are_shown_readable():
    assert hex_address("0201007F") == "127.0.1.2"
    assert hex_address("00000000000000000000000001000000") == "::1"


def test_what_may_replace_what_in_dest(tmp_path):
    from tsubmit.jobs.fetch_files import _plan_moves

    scratch, dest = tmp_path / "scratch", tmp_path / "dest"
    (scratch / "out").mkdir(parents=True)
    (scratch / "out" / "a.txt").write_text("new")
    (dest / "out").mkdir(parents=True)
    assert [(s.name, t, folder) for s, t, folder in _plan_moves(scratch, dest, False)] == [
        ("out", dest / "out", True), ("a.txt", dest / "out" / "a.txt", False)]
    (dest / "out" / "a.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"a\.txt exists; add --overwrite"):
        _plan_moves(scratch, dest, False)
    assert len(_plan_moves(scratch, dest, True)) == 2
    (dest / "out" / "a.txt").unlink()
    (dest / "out" / "a.txt").mkdir()
    with pytest.raises(UsageError, match=r"a\.txt is a folder"):
        _plan_moves(scratch, dest, True)  # never replaced, --overwrite or not
    os.rmdir(dest / "out" / "a.txt")
    os.rmdir(dest / "out")
    (dest / "out").write_text("a file where a folder arrives")
    with pytest.raises(UsageError, match="out exists and is not a folder"):
        _plan_moves(scratch, dest, True)


# --------------------------------------------------------------------------- cluster check's ssh target


@pytest.mark.parametrize(("host_vars", "target", "hint"), [
    (CONNECTION, "alice@10.0.0.7:2222", "ssh -p 2222 alice@10.0.0.7"),
    # Ansible's aliases and the inventory's templates, as tsubmit's own ssh reads them
    ({"ansible_ssh_host": "{{ net }}.9", "net": "10.1.2", "ansible_ssh_user": "bob"},
     "bob@10.1.2.9:22", "ssh -p 22 bob@10.1.2.9"),
    ({"ansible_connection": "local"}, "local connection", None),
])
def test_cluster_check_names_the_target_tsubmit_s_ssh_reaches(host_vars, target, hint):
    from tsubmit.nodes import cluster_check
    from tsubmit.nodes.clusters import Node

    node = Node("gpu1", 0, "10.0.0.7", None, host_vars)
    assert cluster_check._ssh_target(node) == target
    if hint:
        assert hint in cluster_check._ssh_remedy(node, "Permission denied (publickey)")
