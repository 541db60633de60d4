#!/bin/sh
# The compatibility job, run by scripts/test.sh beside the full suite (which
# runs on .venv: Python 3.11, ansible-core 2.19, the newest Optuna):
#
#   tsubmit installed as a user installs it (`pip install .`: no editable
#   install, no test extras, no root) into a venv of the newest Python 3.13
#   this machine has under pyenv, which brings the newest ansible-core that
#   pyproject.toml allows, with the oldest Optuna the Optuna patches support
#   (roles/optuna_store/files/tsubmit_optuna_grpc.py, OLDEST_OPTUNA); then a
#   smoke subset of the e2e tests (run, logs, stop, restart, an existing
#   inventory, cluster check, an Optuna job) and the Optuna patches' tests.
#
# The nodes run jobs with the main venv's Python (torch is there; a user's
# nodes differ from the controller too): TSUBMIT_TEST_NODE_PYTHON.
# Usage: sh scripts/compat.sh     (after sh scripts/setup.sh --test; as root)
set -eu
cd "$(dirname "$0")/.."

pyenv_root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
python="$(ls -d "$pyenv_root"/versions/3.13*/bin/python3 2>/dev/null | sort -V | tail -n 1)"
if [ -z "$python" ]; then
    echo "compat: no Python 3.13 under $pyenv_root/versions (pyenv install 3.13)" >&2
    exit 1
fi
optuna="$(sed -n 's/^OLDEST_OPTUNA = (\([0-9]*\), \([0-9]*\))$/\1.\2.0/p' \
    roles/optuna_store/files/tsubmit_optuna_grpc.py)"

venv=.venv-compat
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q . pytest "optuna==$optuna" grpcio protobuf
"$venv/bin/python" -c 'import ansible, optuna, platform, tsubmit
print(f"compat: tsubmit {tsubmit.__version__} on Python {platform.python_version()}, "
      f"ansible-core {ansible.__version__}, optuna {optuna.__version__}")'

# Each test names the part of the contract it smokes.
TSUBMIT_TEST_NODE_PYTHON="$PWD/.venv/bin/python" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    "tests/e2e/test_run.py::test_torchrun_allreduce_on_real_nodes[2]" \
    tests/e2e/test_lifecycle.py::test_logs_follow_streams_until_the_job_ends_with_its_code \
    tests/e2e/test_lifecycle.py::test_stopping_a_torchrun_job_leaves_no_process_on_any_node \
    tests/e2e/test_lifecycle.py::test_restart_runs_attempt_2_and_keeps_attempt_1_logs \
    tests/e2e/test_real_nodes.py::test_a_vaulted_inventory_through_a_bastion_runs_and_every_later_verb_works \
    "tests/e2e/test_check.py::test_a_healthy_cluster_passes_every_check[2]" \
    tests/e2e/test_optuna_run.py::test_a_two_node_search_fills_one_study_on_the_head \
    tests/unit/test_optuna_grpc.py
