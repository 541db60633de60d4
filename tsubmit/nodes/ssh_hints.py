"""What to tell a user whose ssh failed: which known_hosts file ssh read, and
the next command to run.

ssh finds `~/.ssh/known_hosts` through the passwd entry of the user running
it, not through $HOME, so a user who changed HOME (sudo -E, a CI runner, a
container) edits one file while ssh reads another: the hint names the file
ssh reads, or the one the inventory's ssh options name.
"""

import os
import pwd
import re
import shlex
from collections.abc import Sequence

HOST_KEY_FAILURES = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                     "host key is known for", "No ED25519 host key", "No ECDSA host key",
                     "No RSA host key")
_OFFENDING = re.compile(r"Offending \S+ key in (\S+?):\d+")
_HOST_IN_MESSAGE = re.compile(r"host key is known for (\S+?) and")


def default_known_hosts() -> str:
    """The user known_hosts file ssh reads when no option names one."""
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return os.path.join(home, ".ssh", "known_hosts")


def known_hosts_files(ssh_args: Sequence[str] | str = ()) -> list[str]:
    """The UserKnownHostsFile(s) the ssh options set, else ssh's default."""
    args = shlex.split(ssh_args) if isinstance(ssh_args, str) else list(ssh_args)
    found: list[str] = []
    for index, arg in enumerate(args):
        option = None
        if arg == "-o" and index + 1 < len(args):
            option = args[index + 1]
        elif arg.startswith("-o") and len(arg) > 2:
            option = arg[2:]
        if option:
            key, _, value = option.replace("=", " ", 1).partition(" ")
            if key.lower() == "userknownhostsfile" and value.strip():
                found += [os.path.expanduser(path) for path in value.split()]
    return found or [default_known_hosts()]


def is_host_key_failure(message: str) -> bool:
    return any(marker in message for marker in HOST_KEY_FAILURES)


def host_key_hint(message: str, ssh_args: Sequence[str] | str | None = None) -> str | None:
    """A one-line explanation of a host key failure in MESSAGE, naming the file ssh
    checked and what to run next; None when MESSAGE is not one. SSH_ARGS: the
    options ssh ran with, None when not known (then the default file is named
    with the option that would change it)."""
    if not is_host_key_failure(message):
        return None
    offending = _OFFENDING.search(message)
    files = [offending.group(1)] if offending else known_hosts_files(ssh_args or ())
    where = " or ".join(files)
    if not offending and ssh_args is None:
        where += " (unless the inventory's ssh args set UserKnownHostsFile)"
    if offending or "CHANGED" in message:
        return (f"host key changed: ssh checked it against {where}; if the node was reinstalled, "
                f"remove the old key (ssh-keygen -R HOST -f {files[0]}) and add the new one after "
                "checking it (ssh-keyscan)")
    host = _HOST_IN_MESSAGE.search(message)
    return (f"host key unknown: ssh found no key for {host.group(1) if host else 'the node'} in "
            f"{where} (ssh reads ~ from the passwd entry, not $HOME); add it after checking it "
            f"(ssh-keyscan -p PORT HOST >> {files[0]})")


_NEXT_STEP = " (next: "


def with_next_step(message: str) -> str:
    """Ansible's words for an ssh failure, with what to run next: the known_hosts
    file for a host key failure, `tsubmit cluster check` for the others."""
    hint = host_key_hint(message)
    if hint:
        return f"{message}{_NEXT_STEP}{hint}; then `tsubmit cluster check`)"
    if "Data could not be sent to remote host" in message or "Failed to connect to the host" in message:
        return f"{message}{_NEXT_STEP}`tsubmit cluster check` shows what fails on the node)"
    return message


def without_next_step(message: str) -> str:
    """MESSAGE without what with_next_step added (cluster check gives its own remedy)."""
    return message.split(_NEXT_STEP, 1)[0]
