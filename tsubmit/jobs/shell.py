"""`tsubmit shell`: a session on a rank's node, in the job's workdir with the rank's
environment (node_scripts/shell.sh)."""

import sys

from ..model import layout
from ..nodes import ssh
from ..nodes.places import Place, node_script
from ..nodes.ssh_session import Session


def shell(place: Place, command: list[str]) -> int:
    """An ssh session on the rank's node, in the job's workdir with the rank's environment:
    COMMAND's exit code, or the interactive shell's. On a terminal the node gets one
    (ssh -t), so editors, pagers and Ctrl-C work there."""
    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    job, rank, root = place.job, place.rank, layout.home_relative(place.root)
    environment = layout.attempt_file(job.id, rank.rank, job.attempt, layout.ENVIRONMENT, root=root)
    argv = ssh.command_argv(place.conn, node_script("shell.sh"),
                            [layout.workdir(job.id, root), environment, job.id, str(rank.rank), rank.host,
                             *command], tty=terminal)
    # stdin and stdout are the user's; stderr passes through, its last lines
    # kept to explain an ssh that could not connect.
    session = Session(place.conn, argv, place.where, stdin=None, stdout=None, echo=True)
    code = session.wait()
    if session.unreachable:
        raise session.unreachable_error()
    return code

