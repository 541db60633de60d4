#!/usr/bin/env python3
"""The least a submit through ansible-runner can cost, for bench_submit.py.

A submit needs two round trips per node (the probe, then the launch) and runs
them as an Ansible playbook through ansible-runner. This runs exactly that
skeleton with nothing in it: two `ansible.builtin.raw: "true"` tasks on every
host of INVENTORY, with tsubmit's Ansible environment (its ansible.cfg, forks
covering every host, the SSH control masters of TSUBMIT_HOME). Its time is
Python and ansible-runner start-up, ansible-playbook's start-up and one task
per host and round trip, which any submit built this way pays before doing
anything.

    ansible_floor.py INVENTORY HOSTS   # exit 0 when every host ran both tasks
"""

import sys
import tempfile
from pathlib import Path

import ansible_runner

from tsubmit.nodes import ansible_env

PLAYBOOK = """\
- name: Two round trips per node and nothing else
  hosts: all
  gather_facts: false
  tasks:
    - name: First round trip (the probe's)
      ansible.builtin.raw: "true"
      changed_when: false
    - name: Second round trip (the launch's)
      ansible.builtin.raw: "true"
      changed_when: false
"""


def main(inventory: str, hosts: int) -> int:
    with tempfile.TemporaryDirectory(prefix="floor-") as data_dir:
        project = Path(data_dir) / "project"
        project.mkdir()
        (project / "floor.yml").write_text(PLAYBOOK)
        runner = ansible_runner.run(private_data_dir=data_dir, playbook="floor.yml", inventory=inventory,
                                    envvars=ansible_env.environment(), forks=hosts, quiet=True)
    return 0 if runner.status == "successful" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
