"""Listen on the head's rendezvous address for `tsubmit cluster check`.

Usage: listen.py ADDRESS EXPECTED TIMEOUT

Binds a free TCP port on ADDRESS and prints one JSON line: {"port": N}, or
{"error": "..."} when the address cannot be bound here (not an address of
this node). Then, detached from the SSH session, accepts up to EXPECTED
connections (the workers') and exits after TIMEOUT seconds at most. Python 3.6 or later.
"""

import json
import os
import signal
import socket
import sys
import time


def main() -> None:
    address, expected, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM)[0]
        server = socket.socket(family, kind, proto)
        server.bind(where)
        server.listen(max(expected, 1) + 16)
    except OSError as error:
        print(json.dumps({"error": f"cannot listen on {address} on this node: "
                                   f"{error.strerror or error}"}))
        return
    print(json.dumps({"port": server.getsockname()[1]}), flush=True)
    if expected <= 0:
        return
    # Detach (double fork, new session, no SSH file descriptors) so the task
    # returns. SIGHUP is ignored and the task waits for the first child, so the
    # listener is in its own session before the SSH session can end and hang
    # up on it (on a loaded node the session used to end first: "refused").
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    deadline = time.monotonic() + timeout
    accepted = 0
    while accepted < expected and time.monotonic() < deadline:
        server.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            connection, _ = server.accept()
        except OSError:
            break
        connection.close()
        accepted += 1
    os._exit(0)


main()
