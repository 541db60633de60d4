"""Connect to the head's rendezvous address for `tsubmit cluster check`.

Usage: connect.py ADDRESS PORT TIMEOUT

Python 3.6 or later (nodes may run an old one). Prints one JSON line:
{"status": "ok" | "refused" | "timeout" | "error", "detail": "..."}.
"""

import json
import socket
import sys


def main() -> None:
    address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        with socket.create_connection((address, port), timeout=timeout):
            status, detail = "ok", ""
    except socket.timeout:  # noqa: UP041 (an alias of TimeoutError only since Python 3.10)
        status, detail = "timeout", f"no answer within {timeout:g}s"
    except ConnectionRefusedError:
        status, detail = "refused", "connection refused"
    except OSError as error:
        status, detail = "error", str(error.strerror or error)
    print(json.dumps({"status": status, "detail": detail}))


main()
