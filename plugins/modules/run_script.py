# The work is done by the action plugin of the same name (plugins/action/);
# this file holds its documentation, as ansible.builtin.script's does.

DOCUMENTATION = r"""
module: run_script
short_description: Run a script and its files on a node in one SSH round trip
description:
  - Sends the script and its files to the node as one tar stream on the standard input of a
    single command. The command unpacks them into a new private folder, runs the script from
    the login directory (as M(ansible.builtin.script) does; the files are beside the script, in
    the folder of its C($0)), removes the folder and returns the script's exit code.
  - Where M(ansible.builtin.script) costs about six SSH executions and a copy or template task as
    many again, this costs one, and needs no Python on the node (only C(sh), C(mktemp) and C(tar)).
  - A file larger than 16 MiB is sent first through the connection's own file transfer (two more
    round trips), so the controller never holds large files in memory. That file is written as the
    login user; with become, only a become user root can read it.
  - When the stream cannot be unpacked and the folder's file system has less than 1 MiB left,
    the command says so on its standard error (the folder, then C(No space left on device)),
    where tar itself says only that it wrote fewer bytes than it meant to.
  - Always reports changed; use C(changed_when) for scripts that only look.
  - In check mode the script does not run; set C(check_mode) to false on a task that only looks.
options:
  script:
    description: The script, found like M(ansible.builtin.script)'s (the role's C(files/) first).
    type: str
    required: true
  executable:
    description:
      - What runs the script (C(python3) for a Python script), a name on the node's C(PATH) or a
        path. One word, never split, so a path with spaces is that path.
    type: str
    default: /bin/sh
  executable_args:
    description: Options given to I(executable) before the script (C([-S, -E]) for Python).
    type: list
    elements: str
    default: []
  args:
    description: The script's arguments, each quoted for the shell.
    type: list
    elements: str
    default: []
  files:
    description: Files put beside the script (in the folder of its C($0)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The file's name in the script's folder (a plain name, no C(/)).
        type: str
        required: true
      src:
        description: A file on the controller.
        type: path
      content:
        description: The file's content (a rendered template, for example).
        type: str
      mode:
        description: The file's permissions.
        type: raw
        default: "0600"
  tmpdir:
    description:
      - An absolute folder on the node under which the script's private folder is made (created
        if missing); default C($TMPDIR), else C(/tmp). Give one on the filesystem the script moves
        its files to, so a move is an atomic rename. The private folder is removed when the script
        ends; a run cut short (the connection killed) can leave it behind, so a folder that is
        cleaned up anyway (a job's own) is a good choice.
    type: str
  check_output:
    description:
      - What the task returns as its C(stdout) in check mode, where the script does not run
        (what it would start, for example). Rendered like every argument, so a value of the
        play's data stays data.
    type: str
author: tsubmit
"""

EXAMPLES = r"""
- name: Probe the node with a Python script, in check mode too
  tsubmit.cluster.run_script:
    script: probe.py
    executable: python3
    args: ["{{ request | to_json }}"]
  check_mode: false
  changed_when: false
  register: probe

- name: Unpack the job's tree and start it
  tsubmit.cluster.run_script:
    script: start.sh
    args: ["{{ job_dir }}"]
    tmpdir: "{{ job_dir }}"
    files:
      - name: workdir.tar.gz
        src: "{{ archive }}"
      - name: launch.sh
        content: "{{ lookup('ansible.builtin.template', 'launch.sh.j2') }}"
        mode: "0700"
"""

RETURN = r"""
rc:
  description: The script's exit code.
  returned: always
  type: int
stdout:
  description: The script's standard output.
  returned: always
  type: str
stderr:
  description: The script's standard error.
  returned: always
  type: str
"""
