"""`tsubmit forward`: 127.0.0.1:LOCAL_PORT here forwarded to 127.0.0.1:PORT on a rank's
node, once something listens there (node_scripts/listening.sh), until interrupted."""

import time
from collections.abc import Callable

from ..errors import LaunchError, UsageError
from ..nodes import ssh, ssh_session
from ..nodes.places import Place, node_script
from ..nodes.ports import check_port, free_local_port, hex_address, local_port_free


def remote_listener(place: Place, port: int) -> None:
    """Fail, naming the host, unless something listens on the node's 127.0.0.1:PORT."""
    argv = ssh.command_argv(place.conn, node_script("listening.sh"), [str(port)], tty=False)
    code, output, errors = ssh_session.run(place.conn, argv, place.where, timeout=120)
    answer = output.strip().split()
    if code != 0 or not answer:
        raise LaunchError(f"cannot tell whether port {port} listens on {place.rank.host}",
                          {place.rank.host: (errors.strip().splitlines() or ["no answer"])[-1]})
    where = place.where
    if answer[0] == "none":
        raise UsageError(f"nothing listens on port {port} on {where}: start the server first (bound to "
                         "127.0.0.1 or 0.0.0.0), or check the port")
    if answer[0] == "other":
        addresses = ", ".join(sorted({hex_address(text) for text in answer[1:]}))
        raise UsageError(f"port {port} on {where} listens on {addresses} only, which a forward to "
                         "127.0.0.1 does not reach: bind the server to 127.0.0.1 or 0.0.0.0")


def forward(place: Place, port: int, local_port: int | None, ready: Callable[[str, int], None]) -> None:
    """Forward 127.0.0.1:LOCAL_PORT here to 127.0.0.1:PORT on the rank's node until
    interrupted (Ctrl-C or SIGTERM raise KeyboardInterrupt, interrupts.py; the ssh is ended first).
    READY(url, local port) is called once the local port listens. LOCAL_PORT
    defaults to PORT when that is free here, else to a free port."""
    check_port(port, "PORT")
    if local_port is not None:
        check_port(local_port, "--local-port")
    remote_listener(place, port)
    if place.conn.local:
        # The rank runs on this machine: its port is here already.
        if local_port not in (None, port):
            raise UsageError(f"{place.where} runs on this machine "
                             f"(ansible_connection=local): its port {port} is reachable as it is; "
                             "leave out --local-port")
        ready(f"http://127.0.0.1:{port}/", port)
        while True:
            time.sleep(3600)
    if local_port is None:
        local_port = port if local_port_free(port) else free_local_port()
    elif not local_port_free(local_port):
        raise UsageError(f"local port {local_port} is already in use on this machine: choose another "
                         "with --local-port, or leave it out for a free one")
    session = ssh_session.forward(place.conn, place.where, local_port, port)
    try:
        ready(f"http://127.0.0.1:{local_port}/", local_port)
        session.wait()
        raise ssh_session.ended_forward(session, "the forward ended")
    finally:
        session.end()
