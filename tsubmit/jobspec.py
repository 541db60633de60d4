"""Job spec files: every `tsubmit run` option as a YAML key.

One table, FIELDS, says which keys exist, their type and meaning; it drives
the validation of spec files (an unknown key or a wrong type names the key
and its line), `run --print-spec`, and the JSON Schema shipped for editors
(tsubmit/job.schema.json, kept equal to `json_schema()` by a test).
"""

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import executors
from .errors import UsageError

POLICIES = ("allow", "skip", "replace", "fail")
HOOK_KINDS = ("pre_launch_tasks", "post_launch_tasks", "on_stop_tasks", "pre_launch_roles")


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # string | integer | boolean | mapping | list | command | hooks
    description: str
    choices: tuple[str, ...] = ()
    path: bool = False  # relative to the spec file's folder


FIELDS = (
    Field("cluster", "string", "A named cluster (default: local)."),
    Field("inventory", "string", "An Ansible inventory instead of a named cluster.", path=True),
    Field("group", "string", "With inventory: the group to run on (default: all)."),
    Field("limit", "string", "Only the hosts matching this Ansible pattern."),
    Field("vault_password_file", "string", "Vault password file for the inventory.", path=True),
    Field("name", "string", "Job name; the overlap policy is keyed on it."),
    Field("executor", "string", "How the command starts on each node: " + executors.choices_help(),
          executors.NAMES),
    Field("workdir", "string", "Directory shipped to every node (default: the spec's folder).",
          path=True),
    Field("command", "command", "The command: a list of arguments, or a string split like a shell."),
    Field("env", "mapping", "Environment variables for the job (string values)."),
    Field("env_file", "string", "YAML mapping or dotenv file of environment variables.", path=True),
    Field("gpus", "integer", "GPUs leased per node, one process each (default: all of the node's; "
          "0: none, one process). On a node without GPUs: processes per node."),
    Field("max_restarts", "integer", "Restarts of a failed rank."),
    Field("keep_going", "boolean", "Keep the other ranks running when one fails (default: they are "
          "stopped)."),
    Field("wait", "boolean", "Block until the job ends; exit with its result."),
    Field("follow", "boolean", "Like wait, streaming rank 0's log."),
    Field("timeout", "string", "With wait: stop the job after this long (e.g. 90m)."),
    Field("if_running", "string", "What to do when a job of this name is running.", POLICIES),
    Field("queue", "boolean", "Wait while the job's GPUs are busy on some node instead of exiting 5."),
    Field("queue_timeout", "string", "With queue: give up (exit 5) after this long (e.g. 2h)."),
    Field("image", "string", "Run each rank's command in this container image."),
    Field("container_args", "list", "Extra arguments for the container engine's run command."),
    Field("pull", "string", "When to pull the image: missing, always or never.",
          ("missing", "always", "never")),
    Field("setup", "string", "Run on every node before the rank starts (sh -c, in the workdir, with "
          "the job's environment); skipped where it already succeeded with the same inputs."),
    Field("setup_key", "list", "Files (relative to the workdir) whose content the setup's cache "
          "follows (default: the requirements*.txt, pyproject.toml, uv.lock, environment.yml and "
          "setup.py the workdir holds)."),
    Field("study", "string", "With executor optuna: the study's name (default: the job name)."),
    Field("direction", "string", "With executor optuna: minimize or maximize (default: minimize).",
          ("minimize", "maximize")),
    Field("optuna_storage", "string", "With executor optuna: an external database URL or a name from "
          "`tsubmit db list`, instead of the SQLite store on the head."),
    Field("dashboard", "boolean", "With executor optuna: start optuna-dashboard on the head."),
    Field("notify", "list", "Notification URLs (apprise: ntfy://topic, mailto://user:pass@host, "
          "slack://..., json://host:port, ...), told when the job succeeds, fails, or starts after "
          "waiting in the queue (default: notify of the config file)."),
    Field("notify_on", "list", "The events notified of: started, succeeded, failed, or end for both "
          "(default: all)."),
    Field("hooks", "hooks", "Ansible task files (absolute, or relative to the spec) and roles run on "
          "every node: pre_launch_tasks, post_launch_tasks, on_stop_tasks, pre_launch_roles."),
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

    label = f"{where}: {field.key!r}" if where else f"--{field.key.replace('_', '-')}"
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
