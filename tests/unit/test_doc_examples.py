"""The examples the docs give do what they say (issue 26, item 19)."""

import re
from pathlib import Path

from tsubmit.model import layout  # the launch contract

REPO = Path(__file__).resolve().parents[2]


def test_the_optuna_example_names_the_master_addr_its_workers_get():
    stated = re.findall(r"MASTER_ADDR=([\w.]+)", (REPO / "examples" / "optuna" / "README.md").read_text())
    probe = {"address": "10.0.0.9", "gpus": 1, "remote_root": "/r", "port": 1234, "has_gpus": False,
             "gpu_ids": [], "lease": 0}
    job = {"id": "j", "name": "n", "attempt": 1, "executor": "optuna", "command": ["python"], "env": {},
           "max_restarts": 0}
    given = layout.rank_variables(job, [layout.node_facts(probe, {})], 0)["launch_master_addr"]
    assert stated == [given]


def test_every_setup_venv_in_the_docs_gives_the_job_torch():
    """A venv made by --setup replaces the node's python: without the system's
    packages or torch installed in it, the job fails with ModuleNotFoundError."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    found = 0
    for page in pages:
        for setup in re.findall(r"--setup '([^']*-m venv[^']*)'", page.read_text()):
            found += 1
            assert "--system-site-packages" in setup or re.search(r"pip\"? install [^']*\btorch\b", setup), \
                (page, setup)
    assert found
