"""TCP ports on this machine, for the forwards (`tsubmit forward`, the Optuna dashboard)."""

import contextlib
import socket
from pathlib import Path

from ..errors import UsageError


def check_port(port: int, option: str) -> int:
    """PORT, or a usage error naming OPTION when it is no TCP port."""
    if not 0 < port < 65536:
        raise UsageError(f"{option} must be a TCP port between 1 and 65535, got {port}")
    return port


def local_port_free(port: int) -> bool:
    """Whether 127.0.0.1:PORT can be listened on here. SO_REUSEADDR, as ssh sets it,
    so a port that only has closed connections waiting (TIME_WAIT) counts as free."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hex_address(text: str) -> str:
    """An address as /proc/net/tcp* writes it, readable."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return text
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    if len(raw) == 16:  # four 32-bit words, each in the kernel's byte order
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, words)
    return text


def listening_here(port: int) -> bool:
    """Whether something listens on 127.0.0.1:PORT here, read from /proc without
    connecting (a connection would reach the node's server through the forward,
    and a debugger may take only one client)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False
    wanted = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    return any(fields[1] in wanted and fields[3] == "0A"
               for fields in (line.split() for line in table.splitlines()[1:]) if len(fields) > 3)
