"""Job spec files: every `tsubmit run` option as a YAML key.

One table, FIELDS, says which keys exist, their type and meaning; it drives
`run`'s options and their help (tsubmit/cli/run.py), the validation of spec
files (an unknown key or a wrong type names the key and its line),
`run --print-spec`, and the JSON Schema shipped for editors
(tsubmit/model/job.schema.json, kept equal to `json_schema()` by a test).
"""

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UsageError
from . import executors

POLICIES = ("allow", "skip", "replace", "fail")
HOOK_KINDS = ("pre_launch_tasks", "post_launch_tasks", "on_stop_tasks", "pre_launch_roles")


@dataclass(frozen=True)
class Field:
    """A spec key and the `run` option of the same meaning (cli/run.py makes
    the options from this table): its description is the help of both."""

    key: str
    kind: str  # string | integer | boolean | mapping | list | command | hooks
    description: str
    choices: tuple[str, ...] = ()
    path: bool = False  # relative to the spec file's folder
    # The option: its name when not --KEY, a short name, the metavar in --help,
    # and the default it shows there.
    flag: str | None = None
    short: str | None = None
    metavar: str | None = None
    default: object = None
    # Whether a list, mapping or hooks option adds to the spec file's value (else
    # replaces it), and the separator that may join a list option's values.
    adds: bool = False
    separator: str | None = None

    @property
    def option(self) -> str:
        return self.flag or f"--{self.key.replace('_', '-')}"


FIELDS = (
    Field("cluster", "string", "A named cluster (see `tsubmit cluster list`); default: local.", short="-c"),
    Field("inventory", "string", "An Ansible inventory (file, directory, script or plugin config) instead "
          "of a named cluster.", path=True, short="-i"),
    Field("group", "string", "With an inventory: the group to run on (default: all).", short="-g"),
    Field("limit", "string", "Only the hosts matching this Ansible pattern."),
    Field("vault_password_file", "string", "Vault password file for the inventory's encrypted variables "
          "(remembered for the job's later commands).", path=True),
    Field("name", "string", "Job name (default: a generated friendly name); the if-running policy is "
          "keyed on it."),
    Field("executor", "string", "How the command starts on each node: " + executors.choices_help(),
          executors.NAMES, default=executors.DEFAULT),
    Field("workdir", "string", "Directory shipped to every node (default: the spec's folder, else the "
          "current one).", path=True, default="."),
    Field("command", "command", "The command: a list of arguments, or a string split like a shell."),
    Field("env", "mapping", "Environment variables for the job (string values).", metavar="KEY=VALUE",
          adds=True),
    Field("env_file", "string", "YAML mapping or dotenv file of environment variables (string values).",
          path=True),
    Field("gpus", "integer", "GPUs leased per node, one process each (default: all of the node's: "
          "nvidia-smi's, else tsubmit_gpus; 0: none, one process). On a node without GPUs: processes "
          "per node (default 1)."),
    Field("max_restarts", "integer", "Restarts of a failed rank's command in place, on its node, within "
          "the attempt (torchrun's own, or tsubmit's for distributed); see --restarts for a new attempt "
          "of the whole job.", default=0),
    Field("restarts", "integer", "Attempts tsubmit launches again, on every node, when a rank fails "
          "(exits non-zero or ends without an exit code): every rank of the attempt is stopped and the "
          "job's next attempt starts from the same archive and options, with TSUBMIT_ATTEMPT and "
          "TSUBMIT_RESTART_CAUSE set. Someone must watch: `tsubmit watch` (or `run --wait`). Unlike "
          "--max-restarts, which restarts a rank's command in place, on its node.", default=0),
    Field("node_timeout", "string", "A node that has not answered for longer than this is lost (`tsubmit "
          "watch` acts on it): the job's attempt ends and the next one starts on a spare, or on fewer "
          "nodes (--min-nodes) (default 2m).", metavar="DURATION"),
    Field("min_nodes", "integer", "When a node is lost and no spare is free, go on with the nodes left, "
          "down to this many (default: all of the job's nodes).", metavar="M"),
    Field("sync_dirs", "list", "A folder of the workdir (e.g. ckpt) whose newest copy is copied to every "
          "node before each next attempt (a restart, on the same or other nodes): from rank 0's node, or, "
          "if it is lost, from the node that wrote it last; through the controller, one stream per node.",
          flag="--sync-dir", metavar="DIR", adds=True),
    Field("hang_timeout", "string", "A rank whose processes live but whose log has not grown for this "
          "long (e.g. 30m) is hung: its post-mortem is taken and the attempt ends as if it failed. "
          "Default: off.", metavar="DURATION"),
    Field("keep_going", "boolean", "When a rank fails, keep the other ranks running (by default tsubmit "
          "stops them)."),
    Field("wait", "boolean", "Block until the job ends; exit 0 if it succeeded, 1 if not."),
    Field("follow", "boolean", "Like wait, streaming rank 0's log (every rank's with --all)."),
    Field("timeout", "string", "With wait: stop the job after this long (e.g. 90m) and exit 1.",
          metavar="DURATION"),
    Field("if_running", "string", "When a job of this name runs: allow, skip (exit 0), replace (stop it "
          "first), fail (exit 4).", POLICIES, metavar="POLICY", default="allow"),
    Field("queue", "boolean", "While the GPUs are busy on some node, wait and start as soon as every "
          "node can lease (default: exit 5)."),
    Field("queue_timeout", "string", "With queue: give up after this long (e.g. 2h) and exit 5.",
          metavar="DURATION"),
    Field("image", "string", "Run each rank's command inside this container image."),
    Field("container_args", "list", "Extra arguments for the container engine's run command, e.g. "
          "--shm-size=8g.", flag="--container-arg", metavar="ARG", adds=True),
    Field("pull", "string", "When to pull the image: missing, always or never.",
          ("missing", "always", "never"), metavar="POLICY", default="missing"),
    Field("setup", "string", "Run CMD (sh -c) on every node before the rank starts, in the workdir, with "
          "the job's environment; skipped on a node where it already succeeded with the same inputs. "
          "$TSUBMIT_SETUP_DIR is its folder there; a venv at $TSUBMIT_SETUP_DIR/venv goes first on the "
          "rank's PATH.", metavar="CMD"),
    Field("setup_key", "list", "Files (relative to the workdir) whose content the setup's cache follows "
          "(default: the requirements*.txt, pyproject.toml, uv.lock, environment.yml and setup.py the "
          "workdir holds).", metavar="FILE", adds=True),
    Field("study", "string", "With executor optuna: the study (default: the job name); running again "
          "with the same study continues it."),
    Field("direction", "string", "With executor optuna: minimize (default) or maximize.",
          ("minimize", "maximize")),
    Field("optuna_storage", "string", "With executor optuna: a database URL or a name from "
          "`tsubmit db list` instead of the SQLite store on the head."),
    Field("dashboard", "boolean", "With executor optuna: start optuna-dashboard on the head (see "
          "`tsubmit optuna dashboard JOB`)."),
    Field("notify", "list", "Tell these apprise URLs when the job succeeds, fails, is restarted, hangs, "
          "loses a node, or starts after waiting in the queue: ntfy://topic, "
          "mailto://user:pass@example.com, slack://..., json://host:port/path, ... (default: notify "
          "in the config file).", metavar="URL"),
    Field("notify_on", "list", "Only these events: started, succeeded, failed, end (both ends), "
          "restarted, hung, lost_node. Default: all.", metavar="EVENTS", separator=","),
    Field("hooks", "hooks", "Hooks run on every node: pre_launch_tasks, post_launch_tasks or "
          "on_stop_tasks with Ansible task files (absolute, or relative to the spec); pre_launch_roles "
          "with roles.", flag="--hook", metavar="KIND=FILE|ROLE", adds=True),
)
BY_KEY = {field.key: field for field in FIELDS}


def load(path: Path) -> dict:
    """A spec file's keys, validated; paths made absolute against its folder."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"spec file {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"cannot read spec file {path}: {error.strerror}") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise UsageError(f"spec file {path} is not valid YAML{where}: "
                         f"{getattr(error, 'problem', None) or error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"spec file {path} must be a mapping of keys such as command, cluster, gpus")
    lines = {key.value: key.start_mark.line + 1 for key, _ in root.value} if root else {}
    spec = {}
    for key, value in data.items():
        where = f"spec file {path}, line {lines.get(key, '?')}"
        field = BY_KEY.get(key)
        if field is None:
            close = difflib.get_close_matches(str(key), BY_KEY, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{where}: unknown key {key!r}{hint}")
        spec[key] = check(field, value, where)
        if field.path and spec[key] is not None:
            spec[key] = str((path.parent / spec[key]).resolve())
        if field.kind == "hooks" and spec[key]:
            spec[key] = {kind: [item if kind.endswith("roles") else str((path.parent / item).resolve())
                                for item in items] for kind, items in spec[key].items()}
    spec.setdefault("workdir", str(path.parent.resolve()))
    return spec


def check(field: Field, value, where: str | None):
    """The value converted to the field's type, or a UsageError naming the key
    (and WHERE it is, in a spec file) or the option."""
    import shlex

    label = f"{where}: {field.key!r}" if where else field.option
    if value is None:
        return None
    expected = {"string": str, "integer": int, "boolean": bool, "mapping": dict, "list": list}.get(field.kind)
    if field.kind == "hooks":
        return check_hooks(value, label)
    if field.kind == "command":
        if isinstance(value, str):
            value = shlex.split(value)
        if not isinstance(value, list) or not all(isinstance(a, str | int | float) for a in value):
            raise UsageError(f"{label} must be a list of arguments or a string")
        return [str(a) for a in value]
    if (field.kind == "integer" and isinstance(value, bool)) or not isinstance(value, expected):
        if field.kind == "string" and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # `timeout: 3600`, `name: 2024`
        else:
            raise UsageError(f"{label} must be {_kind_phrase(field.kind)}, got {value!r}")
    if field.choices and value not in field.choices:
        raise UsageError(f"{label} must be one of {', '.join(field.choices)}, got {value!r}")
    if field.kind == "list" and not all(isinstance(item, str) for item in value):
        raise UsageError(f"{label} must be a list of strings, got {value!r}")
    if field.kind == "mapping":
        bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise UsageError(f"{label} must map names to strings (quote numbers and booleans); "
                             f"see {bad[0]!r}")
    return value


def check_hooks(value, label: str) -> dict[str, list[str]]:
    """{kind: [task file or role, ...]}; a single string stands for a list of one."""
    if not isinstance(value, dict):
        raise UsageError(f"{label} must map hook kinds ({', '.join(HOOK_KINDS)}) to task files or roles")
    hooks = {}
    for kind, items in value.items():
        if kind not in HOOK_KINDS:
            close = difflib.get_close_matches(str(kind), HOOK_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{label}: unknown hook kind {kind!r}{hint}")
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise UsageError(f"{label}: {kind} must be a task file or role, or a list of them")
        hooks[kind] = items
    return hooks


def _kind_phrase(kind: str) -> str:
    return {"string": "a string", "integer": "a whole number", "boolean": "true or false",
            "mapping": "a mapping", "list": "a list of strings"}[kind]


def dump(spec: dict) -> str:
    """A spec as YAML, keys in the table's order, empty values left out."""
    ordered = {f.key: spec[f.key] for f in FIELDS if spec.get(f.key) not in (None, False, {}, [], ())}
    return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False)


def json_schema() -> dict:
    kinds = {"string": {"type": "string"}, "integer": {"type": "integer"},
             "boolean": {"type": "boolean"},
             "mapping": {"type": "object", "additionalProperties": {"type": "string"}},
             "list": {"type": "array", "items": {"type": "string"}},
             "hooks": {"type": "object", "additionalProperties": False, "properties": {
                 kind: {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
                 for kind in HOOK_KINDS}},
             "command": {"oneOf": [{"type": "string"},
                                   {"type": "array", "items": {"type": "string"}, "minItems": 1}]}}
    properties = {}
    for field in FIELDS:
        schema = {**kinds[field.kind], "description": field.description}
        if field.choices:
            schema["enum"] = list(field.choices)
        properties[field.key] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tsubmit job spec",
        "description": "A `tsubmit run` job: `tsubmit run -f job.yaml`. Options given on the "
                       "command line override these keys.",
        "type": "object",
        "properties": properties,
        "required": ["command"],
        "additionalProperties": False,
    }


SCHEMA_FILE = Path(__file__).with_name("job.schema.json")


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
