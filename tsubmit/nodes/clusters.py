"""Clusters are Ansible inventories.

A named cluster is an inventory file of its own under the config dir, written
by `tsubmit cluster add` (head first; ranks follow the file's order). The
embedded `local` cluster is this machine. Resolving a cluster reads the
inventory with Ansible's own inventory code, so whatever ansible-playbook
accepts, tsubmit reads the same way; a file of the plain shape tsubmit writes
is read directly when nothing could make Ansible read it differently, which
spares the command Ansible's import (_plain_yaml_hosts).
"""

import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..errors import UsageError
from ..model.collection import launch_contract
from ..model.job import ENGINES
from ..paths import ansible_dir, clusters_dir, imports_dir

LOCAL = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOST_SPEC = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ClusterRef:
    """Where a cluster's hosts come from: inventory sources, a group, a limit."""

    name: str
    sources: list[str]
    group: str = "all"
    limit: str | None = None
    vault_password_file: str | None = None

    def as_dict(self) -> dict:
        return {"sources": self.sources, "group": self.group, "limit": self.limit,
                "vault_password_file": self.vault_password_file}

    def narrowed(self, limit: str | None, vault_password_file: str | None) -> "ClusterRef":
        return replace(self, limit=limit or self.limit,
                       vault_password_file=vault_password_file or self.vault_password_file)


@dataclass
class Node:
    """One host of a resolved cluster, with the variables tsubmit reads."""

    name: str
    rank: int
    address: str  # the address other nodes use to reach this one (rendezvous)
    gpus: int | None  # declared processes per node; None: detect at launch
    vars: dict = field(repr=False, default_factory=dict)


@dataclass
class ResolvedCluster:
    ref: ClusterRef
    nodes: list[Node]
    head_reason: str
    spares: list[str] = field(default_factory=list)  # hosts with tsubmit_spare: kept out of launches

    def require_vault_password(self) -> None:
        """A UsageError naming a vault-encrypted variable when the inventory holds one and
        no password was given, before a launch: ansible-playbook needs it, and would fail
        only once the job was recorded. A dry run or an export decrypts nothing."""
        if self.ref.vault_password_file:
            return
        for node in self.nodes:
            locked = [key for key, value in node.vars.items() if _holds_vaulted(value)]
            if locked:
                raise UsageError(f"host {node.name}: {', '.join(locked)} vault-encrypted in the inventory; "
                                 "give --vault-password-file FILE or --ask-vault-pass")


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"invalid cluster name {name!r}: use letters, digits, '.', '_' or '-' (at most 63)"
        )
    return name


def parse_host(spec: str) -> tuple[str | None, str, int | None]:
    """Split '[USER@]HOST[:PORT]' into its parts."""
    match = _HOST_SPEC.match(spec.strip())
    if not match:
        raise UsageError(f"invalid host {spec!r}: expected [USER@]HOST[:PORT]")
    port = match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"invalid port in {spec!r}: expected 1-65535")
    return match["user"], match["host"].strip("[]"), int(port) if port else None


def cluster_path(name: str) -> Path:
    return clusters_dir() / f"{name}.yml"


def write_cluster(
    name: str,
    head: str,
    workers: list[str],
    *,
    gpus: int | None = None,
    identity_file: str | None = None,
    rdzv_addresses: dict[str, str] | None = None,
    python: str | None = None,
    torchrun: str | None = None,
    spares: list[str] = (),
    lease_dir: str | None = None,
    remote_root: str | None = None,
) -> Path:
    """Write a tsubmit cluster as a YAML inventory, head first, spares last."""
    validate_name(name)
    if name == LOCAL:
        raise UsageError("'local' is the embedded cluster of this machine; choose another name")
    if cluster_path(name).exists() or import_path(name).exists():
        raise UsageError(f"cluster {name!r} already exists; remove it first or use `cluster edit`")
    for spare in spares:
        if spare in (head, *workers):
            raise UsageError(f"--spare {spare} is also given as --head or --worker; a spare is kept "
                             "out of launches")
    inventory: dict = {"all": {"hosts": {}}}
    _add_hosts(inventory, [head, *workers])
    _add_spares(inventory, spares)
    _set_cluster_vars(inventory, gpus=gpus, identity_file=identity_file,
                      rdzv_addresses=rdzv_addresses, python=python, torchrun=torchrun,
                      lease_dir=lease_dir, remote_root=remote_root)
    return _save_cluster(name, inventory)


def read_cluster(name: str) -> dict:
    """The fields `cluster edit` prompts for, as they are now."""
    cluster_vars = _load_written(name)["all"].get("vars", {})
    return {"hosts": list(_load_written(name)["all"]["hosts"]),
            "gpus": cluster_vars.get("tsubmit_gpus"),
            "identity_file": cluster_vars.get("ansible_ssh_private_key_file"),
            "python": cluster_vars.get("tsubmit_python"),
            "torchrun": cluster_vars.get("tsubmit_torchrun")}


def edit_cluster(name: str, *, add_workers: list[str], remove_hosts: list[str], spares: list[str] = (),
                 hosts: list[str] | None = None, **cluster_vars) -> Path:
    """Change a cluster tsubmit wrote: add or remove hosts, make hosts spares, and set
    variables: those of the HOSTS named and the workers added when there are any, else
    the whole cluster's."""
    inventory = _load_written(name)
    known = inventory["all"]["hosts"]
    for host in [*remove_hosts, *(hosts or [])]:  # a host both removed and named is named no more
        if host not in known:
            raise UsageError(f"cluster {name!r} has no host {host!r}; hosts: {', '.join(known)}")
        if host in remove_hosts:
            del known[host]
    added = _add_hosts(inventory, add_workers)
    if not known:
        raise UsageError(f"cluster {name!r} would have no hosts left; remove the cluster instead")
    _add_spares(inventory, spares)
    _set_cluster_vars(inventory, **cluster_vars, only=[*(hosts or []), *added])
    return _save_cluster(name, inventory)


def _load_written(name: str) -> dict:
    if name == LOCAL:
        raise UsageError("the embedded 'local' cluster cannot be edited")
    if import_path(validate_name(name)).exists():
        source = cluster_ref(name).sources[0]
        raise UsageError(f"cluster {name!r} is imported from {source}; edit that inventory instead")
    path = cluster_path(name)
    if not path.exists():
        raise UsageError(unknown_cluster_message(name))
    return yaml.safe_load(path.read_text())


def _add_hosts(inventory: dict, specs: list[str]) -> list[str]:
    """Add the hosts of SPECS; their inventory names."""
    hosts = inventory["all"]["hosts"]
    added = []
    parsed = [parse_host(spec) for spec in specs]
    bare_names = set(hosts) | {host for _, host, _ in parsed}
    for user, host, port in parsed:
        # The same machine twice (two ports): a name no other host has.
        host_name, suffix = host, 1
        while host_name in hosts or (host_name != host and host_name in bare_names):
            host_name, suffix = f"{host}-{suffix}", suffix + 1
        host_vars: dict = {"ansible_host": host}
        if port:
            host_vars["ansible_port"] = port
        if user:
            host_vars["ansible_user"] = user
        hosts[host_name] = host_vars
        added.append(host_name)
    return added


def _add_spares(inventory: dict, specs: list[str]) -> None:
    """Mark hosts as spares (tsubmit_spare): an inventory name already in the
    cluster, else a new host. One host at least stays to launch on."""
    hosts = inventory["all"]["hosts"]
    for spec in specs:
        if spec not in hosts:
            _add_hosts(inventory, [spec])
            spec = list(hosts)[-1]
        hosts[spec]["tsubmit_spare"] = True
    if specs and all(host_vars.get("tsubmit_spare") is True for host_vars in hosts.values()):
        raise UsageError(f"--spare {specs[-1]}: it would leave the cluster no host to launch on "
                         "(a spare is kept out of launches)")


def _set_cluster_vars(inventory: dict, *, gpus=None, identity_file=None, rdzv_addresses=None,
                      python=None, torchrun=None, lease_dir=None, remote_root=None,
                      only: list[str] | None = None) -> None:
    """Set what was given, on the hosts ONLY names, else on the whole cluster (and
    then on no host apart); leave the rest as it is."""
    if gpus is not None and gpus < 1:
        raise UsageError(f"--gpus must be at least 1, got {gpus}")
    if identity_file is not None:
        identity_file = str(Path(identity_file).expanduser().resolve())
        if not (os.path.isfile(identity_file) and os.access(identity_file, os.R_OK)):
            raise UsageError(f"identity file {identity_file} is not readable")
    hosts = inventory["all"]["hosts"]
    for host, address in (rdzv_addresses or {}).items():
        matching = [name for name, host_vars in hosts.items()
                    if host in (name, host_vars.get("ansible_host"))]
        if not matching:
            raise UsageError(f"--rdzv-address names hosts not in the cluster: {host}")
        for name in matching:
            hosts[name]["tsubmit_rdzv_address"] = address
    for option, program in (("--python", python), ("--torchrun", torchrun)):
        if program is not None and launch_contract().program_problem(program):
            raise UsageError(f"{option} {program}: {launch_contract().program_problem(program)}")
    _check_node_path("--lease-dir", lease_dir)
    _check_node_path("--remote-root", remote_root, home=True)
    updates = {"tsubmit_gpus": gpus, "ansible_ssh_private_key_file": identity_file,
               "tsubmit_python": python, "ansible_python_interpreter": python,
               "tsubmit_torchrun": torchrun, "tsubmit_gpu_lease_dir": lease_dir,
               "tsubmit_remote_root": remote_root}
    given = {key: value for key, value in updates.items() if value is not None}
    if only:
        for host in only:
            hosts[host].update(given)
        return
    for host_vars in hosts.values():  # the whole cluster's value, overridden by no host
        for key in given:
            host_vars.pop(key, None)
    cluster_vars = inventory["all"].setdefault("vars", {})
    cluster_vars.update(given)
    if not cluster_vars:
        del inventory["all"]["vars"]


def _check_node_path(option: str, path: str | None, *, home: bool = False) -> None:
    """A folder on the nodes: absolute (or, with HOME, under the login's ~/), one line."""
    if path is None:
        return
    if not (path.startswith("/") or (home and path.startswith("~/"))) or _CONTROL.search(path):
        raise UsageError(f"{option} must be an absolute path on the nodes"
                         + (" or one under ~/" if home else "") + f", got {path!r}")


def _save_cluster(name: str, inventory: dict) -> Path:
    path = cluster_path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = (
        f"# tsubmit cluster {name!r}: an ordinary Ansible inventory, written by\n"
        "# `tsubmit cluster add`. The first host is the head; ranks follow this order.\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    tmp.replace(path)
    return path


def import_path(name: str) -> Path:
    return imports_dir() / f"{name}.yml"


def cluster_names() -> list[str]:
    names = {p.stem for folder in (clusters_dir(), imports_dir()) if folder.is_dir()
             for p in folder.glob("*.yml")}
    return [LOCAL, *sorted(names)]


def cluster_source(name: str) -> str:
    """How a cluster is defined: embedded, written by tsubmit, or imported."""
    if name == LOCAL:
        return "embedded"
    return "imported" if import_path(name).exists() else "tsubmit"


def import_cluster(name: str, inventory: str, group: str = "all", *,
                   vault_password_file: str | None = None, keep_vault_password_file: bool = True) -> Path:
    """Register an existing inventory under NAME, by reference: the file stays the source of truth.

    A vault password file is checked now and, when KEEP_VAULT_PASSWORD_FILE, its
    path (never the password) is kept for the cluster's later commands."""
    validate_name(name)
    if name == LOCAL or cluster_path(name).exists() or import_path(name).exists():
        raise UsageError(f"cluster {name!r} already exists; choose another name or remove it first")
    source = str(Path(inventory).expanduser().resolve())
    if vault_password_file and not os.path.isfile(vault_password_file):
        raise UsageError(f"vault password file {vault_password_file} does not exist")
    kept = str(Path(vault_password_file).expanduser().resolve()) if vault_password_file else None
    ref = ClusterRef(name, [source], group, vault_password_file=vault_password_file)
    resolve(ref)  # fails now, naming the problem, rather than at the first run
    path = import_path(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = {"inventory": source, "group": group}
    if kept and keep_vault_password_file:
        entry["vault_password_file"] = kept
    path.write_text(yaml.safe_dump(entry, sort_keys=False))
    return path


def remove_cluster(name: str) -> None:
    if name == LOCAL:
        raise UsageError("the embedded 'local' cluster cannot be removed")
    for path in (cluster_path(validate_name(name)), import_path(name)):
        if path.exists():
            path.unlink()
            return
    raise UsageError(unknown_cluster_message(name))


def cluster_ref(name: str) -> ClusterRef:
    if name == LOCAL:
        return ClusterRef(LOCAL, [str(ansible_dir() / "inventory" / "local.yml")])
    path = cluster_path(validate_name(name))
    if path.exists():
        return ClusterRef(name, [str(path)])
    if import_path(name).exists():
        entry = yaml.safe_load(import_path(name).read_text())
        return ClusterRef(name, [entry["inventory"]], entry.get("group", "all"),
                          vault_password_file=entry.get("vault_password_file"))
    raise UsageError(unknown_cluster_message(name))


def unknown_cluster_message(name: str) -> str:
    """`unknown cluster 'gpu'; did you mean 'gpus'?`, then the known ones and how to add one."""
    import difflib

    names = cluster_names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown cluster {name!r}; {hint}known clusters: {', '.join(names)} "
            "(see `tsubmit cluster add` or `tsubmit cluster import`)")


def select_cluster(cluster_name, inventory, group, limit, vault_password_file):
    """-c NAME or -i INVENTORY [-g GROUP], narrowed by --limit; default the local cluster."""
    if cluster_name and inventory:
        raise UsageError("give either -c/--cluster or -i/--inventory, not both")
    if group and not inventory:
        raise UsageError("-g/--group goes with -i/--inventory (a named cluster has its group)")
    if vault_password_file and not os.path.isfile(vault_password_file):
        raise UsageError(f"vault password file {vault_password_file} does not exist")
    ref = inventory_ref(inventory, group) if inventory else cluster_ref(cluster_name or LOCAL)
    return ref.narrowed(limit, vault_password_file)


def inventory_ref(path: str, group: str | None) -> ClusterRef:
    """An inventory given with -i: any source ansible-playbook accepts."""
    source = str(Path(path).expanduser().resolve()) if "," not in path else path
    return ClusterRef(path, [source], group or "all")


def resolve(ref: ClusterRef) -> ResolvedCluster:
    """Read the inventory and order its hosts: head first, then inventory order."""
    found, spares = _without_spares(_plain_yaml_hosts(ref) or _ansible_hosts(ref), ref)
    head, reason = _pick_head(ref.group, found)
    ordered = [head] + [name for name in found.names if name != head]
    nodes = [_node(name, rank, found.variables[name]) for rank, name in enumerate(ordered)]
    return ResolvedCluster(ref, nodes, reason, spares)


@dataclass
class _Hosts:
    names: list[str]  # the selected hosts, in inventory order
    variables: dict[str, dict]  # each host's variables
    head_groups: dict[str, list[str]]  # `GROUP_head` and `tsubmit_head`, when groups of the inventory


def _ansible_hosts(ref: ClusterRef, *, reveal: bool = False) -> _Hosts:
    """The hosts as Ansible reads them. A vaulted value becomes VAULTED (tsubmit
    decides nothing on a secret and must not show one), unless REVEAL, for the
    connection settings of a command tsubmit runs itself (logs -f)."""
    from .ansible_env import load_inventory, quiet, vault_secret

    inventory, variables = load_inventory(ref.sources, ref.vault_password_file)
    secret = vault_secret(ref.vault_password_file) if reveal else None
    with quiet():
        if ref.limit:
            inventory.subset(ref.limit)
        hosts = inventory.get_hosts(pattern=ref.group)
        if ref.group != "all" and ref.group not in inventory.groups and ref.group not in inventory.hosts:
            raise UsageError(f"group {ref.group!r} is not in {', '.join(ref.sources)}")
        if not hosts:
            where = f"group {ref.group!r}" + (f" with --limit {ref.limit!r}" if ref.limit else "")
            raise UsageError(f"{where} of {', '.join(ref.sources)} has no hosts")
        head_groups = {group: [str(h.name) for h in inventory.get_hosts(pattern=group) if h in hosts]
                       for group in (f"{ref.group}_head", "tsubmit_head") if group in inventory.groups}
        host_vars = {str(host.name): _unvaulted(variables.get_vars(host=host), secret) for host in hosts}
    return _Hosts([str(host.name) for host in hosts], host_vars, head_groups)


# What a vaulted variable's value is to tsubmit: shown as such (a dry run, an
# error message), never decrypted except to open an ssh connection itself.
VAULTED = "<vaulted>"


def _unvaulted(value, secret=None):
    """VALUE with every vault-encrypted string replaced by VAULTED, or by its clear
    text when SECRET is given. Ansible 2.19's encrypted strings decrypt only
    inside a VaultSecretsContext, so any comparison with one outside it would
    raise: none may reach the code below."""
    from ansible.parsing.vault import EncryptedString, VaultHelper, VaultLib

    if isinstance(value, EncryptedString):
        if secret is None:
            return VAULTED
        ciphertext = VaultHelper.get_ciphertext(value, with_tags=False)
        try:
            return VaultLib([("default", secret)]).decrypt(ciphertext).decode()
        except Exception:  # a value encrypted with another password
            return VAULTED
    if isinstance(value, dict):
        return {key: _unvaulted(item, secret) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_unvaulted(item, secret) for item in value]
    return value


def _holds_vaulted(value) -> bool:
    if isinstance(value, dict):
        return any(_holds_vaulted(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_vaulted(item) for item in value)
    return value == VAULTED


# A host name the YAML inventory takes as it is (no range, no port).
_PLAIN_HOST_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _plain_yaml_hosts(ref: ClusterRef) -> _Hosts | None:
    """The hosts of an inventory of the shape tsubmit writes (one YAML file:
    all.hosts with their variables, all.vars), read without importing Ansible,
    which costs every command that resolves a cluster about 0.35 s. None when
    anything could make Ansible read it differently (groups, a limit, a vault,
    group_vars/ or host_vars/ beside it, another ansible.cfg, a YAML tag such as
    !vault, a host range): resolve() then asks Ansible."""
    if (len(ref.sources) != 1 or ref.group != "all" or ref.limit or ref.vault_password_file
            or os.environ.get("TSUBMIT_ANSIBLE_CONFIG")):
        return None
    path = Path(ref.sources[0])
    if (path.suffix not in (".yml", ".yaml") or not path.is_file()
            or (path.parent / "group_vars").exists() or (path.parent / "host_vars").exists()):
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # Ansible's loader knows its own tags, and names a real problem
    top = data.get("all") if isinstance(data, dict) and set(data) == {"all"} else None
    if not isinstance(top, dict) or not set(top) <= {"hosts", "vars"}:
        return None
    hosts, group_vars = top.get("hosts"), top.get("vars") or {}
    if not hosts or not isinstance(hosts, dict) or not isinstance(group_vars, dict):
        return None
    if not all(isinstance(name, str) and _PLAIN_HOST_NAME.match(name) and isinstance(own, dict | None)
               for name, own in hosts.items()):
        return None
    return _Hosts(list(hosts), {name: {**group_vars, **(own or {}), "inventory_hostname": name}
                                for name, own in hosts.items()}, {})


def _without_spares(found: _Hosts, ref: ClusterRef) -> tuple[_Hosts, list[str]]:
    """The hosts a job launches on, and the spares (tsubmit_spare) kept out of it."""
    spares = [name for name in found.names if _truthy(found.variables[name].get("tsubmit_spare"))]
    if not spares:
        return found, []
    heads = [name for name in spares if _truthy(found.variables[name].get("tsubmit_head"))]
    if heads:
        raise UsageError(f"host {heads[0]} sets both tsubmit_head and tsubmit_spare; a spare is "
                         "kept out of launches, so it cannot be the head")
    names = [name for name in found.names if name not in spares]
    if not names:
        raise UsageError(f"every host of {', '.join(ref.sources)} is a spare (tsubmit_spare: "
                         f"{', '.join(spares)}); keep at least one host to launch on")
    head_groups = {group: [name for name in members if name not in spares]
                   for group, members in found.head_groups.items()}
    return _Hosts(names, found.variables, head_groups), spares


def _pick_head(group: str, found: _Hosts) -> tuple[str, str]:
    flagged = [name for name in found.names if _truthy(found.variables[name].get("tsubmit_head"))]
    if len(flagged) > 1:
        raise UsageError(f"several hosts set tsubmit_head: {', '.join(flagged)}; keep it on one")
    if flagged:
        return flagged[0], "tsubmit_head is set on it"
    for head_group in (f"{group}_head", "tsubmit_head"):
        if found.head_groups.get(head_group):
            return found.head_groups[head_group][0], f"first host of group {head_group}"
    return found.names[0], f"first host of group {group}"


def _truthy(value) -> bool:
    return value is True or str(value).lower() in ("true", "yes", "1")


def _node(name: str, rank: int, host_vars: dict) -> Node:
    # The one template the embedded inventory uses, resolved as ansible-playbook will.
    host_vars = {
        key: sys.executable if value == "{{ ansible_playbook_python }}" else value
        for key, value in host_vars.items()
    }
    gpus = host_vars.get("tsubmit_gpus")
    if gpus is not None and (isinstance(gpus, bool) or not str(gpus).isdigit() or int(gpus) < 1):
        raise UsageError(f"host {name}: tsubmit_gpus must be a whole number >= 1, got {gpus!r}")
    env = host_vars.get("tsubmit_env", {})
    if not isinstance(env, dict) or not all(_ENV_KEY.match(str(k)) for k in env):
        raise UsageError(f"host {name}: tsubmit_env must map variable names to values, got {env!r}")
    key_file = host_vars.get("ansible_ssh_private_key_file")
    if key_file and "{{" not in str(key_file):
        key_path = os.path.expanduser(str(key_file))
        if not (os.path.isfile(key_path) and os.access(key_path, os.R_OK)):
            raise UsageError(f"host {name}: identity file {key_file} is not readable")
    engine = str(host_vars.get("tsubmit_container_engine", "docker"))
    if os.path.basename(engine) not in ENGINES:
        raise UsageError(f"host {name}: tsubmit_container_engine must be docker or podman (a name on "
                         f"PATH or a full path to one), got {engine!r}")
    run_args = host_vars.get("tsubmit_container_run_args", [])
    if not isinstance(run_args, list) or not all(isinstance(arg, str) for arg in run_args):
        raise UsageError(f"host {name}: tsubmit_container_run_args must be a list of arguments, "
                         f"got {run_args!r}")
    address = str(host_vars.get("tsubmit_rdzv_address") or host_vars.get("ansible_host") or name)
    if address == "localhost":
        address = "127.0.0.1"
    return Node(name, rank, address, int(gpus) if gpus is not None else None, host_vars)


def host_variables(sources: list[str], names: list[str], vault_password_file: str | None = None,
                   *, reveal: bool = True) -> dict[str, dict]:
    """The merged variables of the named hosts, as ansible-playbook sees them
    (a vaulted value as VAULTED unless REVEAL)."""
    return {name: node.vars for name, node in
            host_nodes(sources, names, vault_password_file, reveal=reveal).items()}


def host_nodes(sources: list[str], names: list[str], vault_password_file: str | None = None,
               *, reveal: bool = True) -> dict[str, Node]:
    """The named hosts as nodes (rank 0 each), with their merged variables, address and processes."""
    ref = ClusterRef("hosts", sources, vault_password_file=vault_password_file)
    found = _plain_yaml_hosts(ref) or _ansible_hosts(ref, reveal=reveal)
    for name in names:
        if name not in found.variables:
            raise UsageError(f"host {name} is no longer in {', '.join(sources)}")
    return {name: _node(name, 0, found.variables[name]) for name in names}
