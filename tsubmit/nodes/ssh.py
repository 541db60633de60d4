"""How the controller opens an SSH connection to a host itself.

Every remote step is an Ansible playbook, except what Ansible cannot do:
stream a tar (`tsubmit fetch`), hold an interactive session (`tsubmit
shell`), keep a port forward open (`tsubmit forward`, the Optuna
dashboard) or follow a log live. Those run ssh themselves, and this module
is the one place that builds that ssh command line, so that it reaches a
host exactly as ansible-playbook does: the inventory's connection settings,
read like Ansible's ssh connection plugin reads them (the same variables,
the same aliases, the same order of options, since ssh keeps the first
value it is given for each option).

A host with `ansible_connection: local` is this machine: its commands run
here through `sh -c`, without ssh.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass

from ..errors import UsageError

# Each setting and the variables Ansible reads it from, first match wins
# (ansible.builtin.ssh's documented aliases).
_SETTINGS = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "ssh_args": ("ansible_ssh_args",),
    "common_args": ("ansible_ssh_common_args",),
    "extra_args": ("ansible_ssh_extra_args",),
    "executable": ("ansible_ssh_executable",),
    "timeout": ("ansible_ssh_timeout", "ansible_timeout"),
    "connection": ("ansible_connection",),
}
# What tsubmit's ansible.cfg sets (ssh_args, timeout): used when the inventory
# sets no ansible_ssh_args / timeout of its own, as ansible-playbook does.
# ControlMaster/ControlPersist: one SSH handshake per node for a series of
# commands; ServerAliveInterval: a node that vanished (a dead link, a
# rebooted switch) ends the session within a minute instead of never.
DEFAULT_SSH_ARGS = ("-o", "ControlMaster=auto", "-o", "ControlPersist=600s",
                    "-o", "ServerAliveInterval=15")
DEFAULT_TIMEOUT = 20
# ssh's own exit code when it could not connect or authenticate.
SSH_FAILED = 255
# Connection plugins that are ssh underneath (their variables are the same).
_SSH_CONNECTIONS = ("ssh", "ansible.builtin.ssh", "smart", "paramiko", "ansible.builtin.paramiko_ssh",
                    "paramiko_ssh")
_LOCAL_CONNECTIONS = ("local", "ansible.builtin.local")


@dataclass(frozen=True)
class Connection:
    """How to reach one inventory host, its templates rendered."""

    host: str  # the inventory name, for messages
    local: bool
    address: str = ""
    port: str | None = None
    user: str | None = None
    key_file: str | None = None
    ssh_args: tuple[str, ...] = DEFAULT_SSH_ARGS
    common_args: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    executable: str = "ssh"
    timeout: str = str(DEFAULT_TIMEOUT)


def connection(host: str, host_vars: dict) -> Connection:
    """The connection settings of HOST from its variables (clusters.host_variables)."""
    values = rendered(host, host_vars, [name for names in _SETTINGS.values() for name in names])

    def setting(key: str):
        for name in _SETTINGS[key]:
            if values.get(name) not in (None, ""):
                return values[name]
        return None

    kind = str(setting("connection") or "ssh")
    if kind in _LOCAL_CONNECTIONS:
        return Connection(host, local=True)
    if kind not in _SSH_CONNECTIONS:
        raise UsageError(f"host {host} uses ansible_connection={kind}: tsubmit reaches a node itself "
                         "(fetch, shell, forward, logs -f) only over ssh or on this machine (local)")
    ssh_args = setting("ssh_args")
    return Connection(
        host, local=False,
        address=str(setting("address") or values.get("inventory_hostname") or host),
        port=str(setting("port")) if setting("port") is not None else None,
        user=str(setting("user")) if setting("user") is not None else None,
        key_file=str(setting("key_file")) if setting("key_file") else None,
        ssh_args=tuple(_split(ssh_args)) if ssh_args is not None else DEFAULT_SSH_ARGS,
        common_args=tuple(_split(setting("common_args"))),
        extra_args=tuple(_split(setting("extra_args"))),
        executable=str(setting("executable") or "ssh"),
        timeout=str(setting("timeout") or DEFAULT_TIMEOUT),
    )


def target(conn: Connection) -> str:
    """Where ssh goes, for messages: `user@address:port` (22 when the inventory sets
    no port), or `local connection`."""
    if conn.local:
        return "local connection"
    return f"{conn.user + '@' if conn.user else ''}{conn.address}:{conn.port or 22}"


def login_hint(conn: Connection) -> str:
    """The ssh command a user types to try the connection by hand."""
    return f"ssh -p {conn.port or 22} {conn.user + '@' if conn.user else ''}{conn.address}"


def rendered(host: str, host_vars: dict, names: list[str]) -> dict:
    """HOST_VARS with the values of NAMES that are templates rendered against the host's
    variables. The inventory is code, as Ansible has it: `ansible_host: "{{ ... }}"`
    means what ansible-playbook makes of it. A template that needs more than the
    host's variables (facts, another host's) is an error naming the variable."""
    values = dict(host_vars)
    templates = [name for name in names if isinstance(values.get(name), str)
                 and ("{{" in values[name] or "{%" in values[name])]
    if not templates:
        return values
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    templar = Templar(loader=DataLoader(), variables=values)
    for name in templates:
        try:
            values[name] = templar.template(trust_as_template(values[name]))
        except Exception as error:  # Ansible's errors have no common public base here
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"host {host}: cannot render {name} ({values[name]!r}) outside a playbook: "
                             f"{first}") from None
    return values


def _split(value) -> list[str]:
    # Ansible splits these variables with shlex too, so quoting means the same.
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return shlex.split(str(value))


def _names_option(args: tuple[str, ...], option: str) -> bool:
    """Whether ARGS set `-o OPTION=...` (any spelling ssh accepts)."""
    wanted = option.lower()
    for index, arg in enumerate(args):
        text = args[index + 1] if arg == "-o" and index + 1 < len(args) else (
            arg[2:] if arg.startswith("-o") and len(arg) > 2 else "")
        if text.replace("=", " ", 1).split(" ", 1)[0].strip().lower() == wanted:
            return True
    return False


def control_path(conn: Connection) -> str:
    """The control socket Ansible's ssh plugin uses for this host (its
    _create_control_path: a hash of host, port and user under the control dir
    tsubmit gives Ansible), so a `tsubmit shell` right after `tsubmit run` reuses
    the connection Ansible opened, and Ansible reuses ours. Should Ansible change
    its naming, ssh just opens a master of its own."""
    from .ansible_env import control_dir

    digest = hashlib.sha1(f"{conn.address}-{conn.port}-{conn.user}".encode()).hexdigest()[:10]
    return f"{control_dir()}/{digest}"


def ssh_argv(conn: Connection, *, tty: bool | None = None, shared: bool = True,
             options: tuple[str, ...] = ()) -> list[str]:
    """ssh with the host's connection settings, ending with `-- ADDRESS`: append the
    remote command.

    TTY: True asks for a terminal on the node (-t: an interactive shell, a
    command that draws), False forbids one (-T: a byte stream such as a tar must
    not pass a terminal's line discipline), None leaves it to ssh.
    SHARED: reuse (or open) the persistent control master Ansible uses; False
    gives this command a connection of its own that ends with it (a forward).
    OPTIONS go first, so they win over the inventory's: ssh keeps the first value
    of each option.
    """
    if conn.local:
        raise ValueError(f"host {conn.host} is local: it has no ssh command")
    # Never prompt: a password, passphrase or host key question would hang a
    # command that nobody watches (fetch in a script, a forward in the
    # background). Keys and known host keys only, as Ansible runs.
    argv = [conn.executable, "-o", "BatchMode=yes", *options]
    if tty is True:
        argv.append("-t")
    elif tty is False:
        argv.append("-T")
    if shared:
        argv += conn.ssh_args
    else:
        # Its own connection: the forward lives and dies with this process,
        # and ExitOnForwardFailure applies to it (a shared master would keep
        # the forward, or report its failure to nobody).
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ServerAliveInterval=15"]
    # The rest in ansible.builtin.ssh's order.
    if conn.port:
        argv += ["-o", f"Port={conn.port}"]
    if conn.key_file:
        argv += ["-o", f'IdentityFile="{os.path.expanduser(conn.key_file)}"']
    # Ansible without ansible_password: public keys only, no keyboard prompts.
    argv += ["-o", "KbdInteractiveAuthentication=no",
             "-o", "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
             "-o", "PasswordAuthentication=no"]
    if conn.user:
        argv += ["-o", f"User={conn.user}"]
    # A node that does not answer is named after this many seconds, not after
    # the TCP stack gives up (minutes).
    argv += ["-o", f"ConnectTimeout={conn.timeout}"]
    # The inventory's own: -F files, ProxyJump or ProxyCommand bastions,
    # known_hosts files, anything else.
    argv += [*conn.common_args, *conn.extra_args]
    given = (*conn.ssh_args, *conn.common_args, *conn.extra_args)
    if shared and _names_option(conn.ssh_args, "ControlPersist") and not _names_option(given, "ControlPath"):
        argv += ["-o", f"ControlPath={control_path(conn)}"]
    return [*argv, "--", conn.address]


def sh_words(script: str, args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """argv running SCRIPT with POSIX sh, ARGS as its positional parameters: data,
    never parsed by a shell."""
    return ["sh", "-c", script, "tsubmit", *args]


def remote_command(words: list[str]) -> str:
    """WORDS as the one string ssh hands the node's login shell, each single-quoted,
    so the node runs exactly these words whatever they hold."""
    return " ".join(shlex.quote(word) for word in words)


def command_argv(conn: Connection, script: str, args: list[str] | tuple[str, ...] = (), *,
                 tty: bool | None = None, shared: bool = True, options: tuple[str, ...] = ()) -> list[str]:
    """argv that runs SCRIPT (sh, ARGS as "$@") on the host: over ssh (SHARED and
    OPTIONS as for ssh_argv), or here for a local connection."""
    words = sh_words(script, args)
    if conn.local:
        return words
    return [*ssh_argv(conn, tty=tty, shared=shared, options=options), remote_command(words)]


def forward_argv(conn: Connection, local_port: int, remote_port: int) -> list[str]:
    """ssh that forwards 127.0.0.1:LOCAL_PORT here to 127.0.0.1:REMOTE_PORT on the host
    and runs nothing (-N), exiting when the local port cannot be bound
    (ExitOnForwardFailure) rather than running without a forward."""
    return ssh_argv(conn, tty=False, shared=False,
                    options=("-N", "-o", "ExitOnForwardFailure=yes",
                             "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}"))
