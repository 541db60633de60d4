"""The Optuna study store of a tsubmit job, on its head node.

Usage (every argument but the action is one JSON object, which holds no secret:
an external storage URL is only ever read from the 0600 file named by
"url_file"):

  optuna_store.py start JSON       start the store (and the dashboard) for a job; print the endpoint
  optuna_store.py stop JSON        stop the watchdog, mark RUNNING trials FAIL, stop dashboard and store
  optuna_store.py release JSON     the controller saw every worker end: the watchdog stops the store
  optuna_store.py summary JSON     trials by state, best value and params (one JSON line)
  optuna_store.py snapshot JSON    a consistent copy of the study database (for `tsubmit optuna fetch`)
  optuna_store.py dashboard JSON   make sure a dashboard serves the study on 127.0.0.1; print its port
  optuna_store.py check JSON       the modules a worker needs import on this node

and, started detached by `start` and the watchdog (their own session and
process group, their own pid and log files under <job dir>/optuna/):

  optuna_store.py serve DIR              the gRPC storage proxy over the study's SQLite file
  optuna_store.py watch DIR              the watchdog
  optuna_store.py serve-dashboard DIR    optuna-dashboard, bound to 127.0.0.1

The code, by concern (the role's tasks ship every file beside this one):
  store_actions.py     the one-shot actions above
  store_servers.py     the two servers (serve, serve-dashboard)
  store_supervisor.py  starting, proving, watching and stopping the store's processes
  store_optuna.py      everything that imports Optuna, through its public API
  tsubmit_optuna_grpc.py  Optuna's private gRPC API, the one home of it (the workers'
                       helper ships it too)
  store_base.py        the store's folder and store.json, errors, ports
  store_urls.py        URLs with the password masked (the controller uses the same file)
  tsubmit_procs.py     is a recorded pid still ours (the node_lib role's, shared with status)

Files of a job's store, in <remote root>/<job id>/optuna/ (mode 0700):
  store.json            what start decided: study, file, address, port, dashboard port, ...
  *.py                  these scripts, kept so the detached processes outlive the Ansible task
  server.{pid,log,ready} the gRPC server       pid files hold "PID STARTTICKS EPOCH": a pid
  watchdog.{pid,log}     the watchdog           is only signalled while its start time still
  dashboard.{pid,log,ready} the dashboard       matches, so a reused pid is never hit
  stopping              left by stop: nothing is restarted any more
  workers-ended         left by release
  ended                 why and when the store stopped
The study's SQLite file lives in <studies dir>/<study>.db (default
<remote root>/optuna-studies), so a later job with the same study continues
it; a lock file beside it lets one server at a time serve it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback

import store_actions
import store_servers
import store_supervisor
from store_base import StoreError, fail, first_line, load_config, log, url_or_none
from store_urls import scrub

ACTIONS = {
    "start": store_actions.start, "stop": store_actions.stop, "release": store_actions.release,
    "summary": store_actions.summary, "snapshot": store_actions.snapshot,
    "dashboard": store_actions.dashboard, "check": store_actions.check,
}
DAEMONS = {"serve": store_servers.serve, "watch": store_supervisor.watch,
           "serve-dashboard": store_servers.serve_dashboard}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in {**ACTIONS, **DAEMONS}:
        fail("\n\n".join(__doc__.split("\n\n")[1:3]))
    action, argument = sys.argv[1:]
    if action in DAEMONS:
        try:
            DAEMONS[action](argument)
        except SystemExit:
            raise
        except BaseException as error:
            log(f"ERROR {first_line(error)}")
            traceback.print_exc()
            sys.exit(1)
        return
    options = json.loads(argument)
    try:
        ACTIONS[action](options)
    except StoreError as error:
        fail(str(error))
    except ImportError as error:
        fail(f"{error.name or error} is not installed for {sys.executable} on this node; "
             f"{store_actions.NOT_INSTALLED}")
    except Exception as error:
        url = None
        with contextlib.suppress(Exception):
            config = load_config(options.get("job_dir", ""))
            url = url_or_none(config) if config else None
        fail(scrub(f"optuna store {action} failed: {first_line(error)}", url))


if __name__ == "__main__":
    main()
