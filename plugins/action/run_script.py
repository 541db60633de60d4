"""Action of tsubmit.cluster.run_script (documented in plugins/modules/run_script.py).

ansible.builtin.script costs a node about six SSH executions (a temporary
folder, a transfer, chmod, the run, the removal); a copy or template task as
many again. Here the script and its files travel as one tar stream on the
standard input of a single command, which unpacks them into a private folder,
runs the script and removes the folder: one SSH execution, and no Python
module on the node.
"""

import io
import os
import shlex
import tarfile
import time

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase

# A file above this size is not held in memory (every fork would hold its own
# copy): it goes first through the connection's file transfer, which streams
# from disk, at the cost of two more round trips (the folder, the transfer).
INLINE_LIMIT = 16 * 1024 * 1024

FILE_OPTIONS = {
    "name": {"type": "str", "required": True},
    "src": {"type": "path"},
    "content": {"type": "str"},
    "mode": {"type": "raw", "default": "0600"},
}
ARGUMENT_SPEC = {
    "script": {"type": "str", "required": True},
    "executable": {"type": "str", "default": "/bin/sh"},
    "executable_args": {"type": "list", "elements": "str", "default": []},
    "args": {"type": "list", "elements": "str", "default": []},
    "files": {"type": "list", "elements": "dict", "default": [], "options": FILE_OPTIONS,
              "mutually_exclusive": [["src", "content"]], "required_one_of": [["src", "content"]]},
    "tmpdir": {"type": "str"},
    "check_output": {"type": "str"},
}


class ActionModule(ActionBase):
    # Nothing goes through Ansible's remote temporary folder.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            script = self._loader.get_real_file(self._find_needle("files", args["script"]))
        except AnsibleError as error:
            raise AnsibleActionFail(str(error)) from None
        files = [_checked(item) for item in args["files"]]
        script_name = os.path.basename(script)
        if script_name in {item["name"] for item in files}:
            raise AnsibleActionFail(f"files: {script_name} is the script's own name")
        if self._task.check_mode:
            names = ", ".join(item["name"] for item in files)
            result.update(changed=True, msg=f"check mode: would run {script_name}"
                          + (f" with {names}" if names else ""))
            if args["check_output"] is not None:
                result.update(stdout=args["check_output"])
            return result

        large = [item for item in files if item["src"] and os.path.getsize(item["src"]) > INLINE_LIMIT]
        inline = [item for item in files if item not in large]
        folder = self._make_folder(args["tmpdir"]) if large else None
        try:
            for item in large:
                self._connection.put_file(item["src"], f"{folder}/{item['name']}")
            bundle = _tar([(script_name, script, None, 0o700)]
                          + [(item["name"], item["src"], item["content"], item["mode"]) for item in inline])
            command = _command(script_name, args, folder, large, self._compute_environment_string())
            outcome = self._low_level_execute_command(command, sudoable=True, in_data=bundle)
        except BaseException:
            if folder:  # the command removes its folder itself; a failed transfer leaves it
                self._low_level_execute_command(f"rm -rf {shlex.quote(folder)}", sudoable=False)
            raise
        # rc, stdout and stderr: not their *_lines twins, which would carry every
        # byte of output twice through the worker, the callbacks and runner's events.
        result.update(rc=outcome["rc"], stdout=outcome["stdout"], stderr=outcome["stderr"], changed=True)
        if outcome["rc"] != 0:
            result.update(failed=True, msg="non-zero return code")
        return result

    def _make_folder(self, tmpdir):
        # As the login user, who writes into it by file transfer; a become
        # user root reads it, another become user could not.
        made = self._low_level_execute_command(_mktemp(tmpdir), sudoable=False)
        if made["rc"] != 0:
            raise AnsibleActionFail(f"cannot create a folder on the node: {made['stderr'].strip()}")
        return made["stdout"].strip()


def _checked(item):
    name = item["name"]
    if not name or "/" in name or name in (".", ".."):
        raise AnsibleActionFail(f"files: {name!r} is not a plain file name")
    mode = item["mode"]
    item["mode"] = int(mode, 8) if isinstance(mode, str) else int(mode)
    return item


def _mktemp(tmpdir):
    """A command printing a new private folder under TMPDIR (made if missing)."""
    if not tmpdir:
        return 'mktemp -d "${TMPDIR:-/tmp}/.tsubmit-script.XXXXXX"'
    return f"mkdir -p {shlex.quote(tmpdir)} && mktemp -d {shlex.quote(tmpdir)}/.tsubmit-script.XXXXXX"


# The stream unpacked into the folder; tar says only "Wrote only N of M bytes"
# of a disk that is full, so a folder left with less than 1 MiB free says so.
_UNPACK = ('{ tar -xf - -C "$b" || { df -Pk "$b" | awk \'NR == 2 && $4 < 1024 { exit 1 }\' '
           '|| echo "${b%/*}: No space left on device" >&2; false; }; }')


def _command(script_name, args, folder, transferred, environment):
    """The node's side: a private folder, the stream unpacked into it (and the
    transferred files given their modes), the script run from the login
    directory (as ansible.builtin.script runs), the folder removed, the
    script's exit code kept."""
    made = f"b={shlex.quote(folder)}" if folder else f"b=$({_mktemp(args['tmpdir'])}) || exit 1"
    steps = [_UNPACK] + [f'chmod {item["mode"]:o} "$b"/{shlex.quote(item["name"])}'
                                     for item in transferred]
    run = " ".join([environment.strip(), shlex.join([args["executable"], *args["executable_args"]]),
                    f'"$b"/{shlex.quote(script_name)}', shlex.join(args["args"])]).strip()
    return f'{made}; {" && ".join(steps)} && {run}; rc=$?; rm -rf "$b"; exit $rc'


def _tar(members):
    """An uncompressed tar stream of (name, source path, content, mode) entries."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as bundle:
        for name, path, content, mode in members:
            if content is None:
                with open(path, "rb") as source:
                    data = source.read()
            else:
                data = to_bytes(content)
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode, entry.mtime = len(data), mode, time.time()
            bundle.addfile(entry, io.BytesIO(data))
    return stream.getvalue()
