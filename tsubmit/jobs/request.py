"""Turn `tsubmit run` options into one validated RunRequest.

Every check here names the option and the bad value, so the CLI can print it
as one line and exit 2 before anything is recorded or sent to a node.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import UsageError
from ..model import executors
from ..model.job import PULL_POLICIES
from ..nodes.clusters import ClusterRef

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
# The TSUBMIT_* variables a job may set: switches the nodes' helpers read
# (README: rank order, Optuna's URI). Every other TSUBMIT_* is tsubmit's own.
JOB_SWITCHES = ("TSUBMIT_RANK_ORDER", "TSUBMIT_OPTUNA_URI")


@dataclass
class RunRequest:
    command: list[str]
    cluster: ClusterRef
    workdir: Path
    executor: str = executors.DEFAULT
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    gpus: int | None = None
    max_restarts: int = 0
    keep_going: bool = False
    image: str | None = None
    container_args: list[str] = field(default_factory=list)
    pull: str = "missing"
    hooks: dict[str, list[str]] = field(default_factory=dict)
    optuna: dict | None = None  # {study, direction, storage, dashboard} with executor optuna
    # --setup and --setup-key (None: the default key files); validation makes
    # setup_step, what the nodes get (tsubmit/model/setup.py).
    setup: str | None = None
    setup_key: list[str] | None = None
    setup_step: dict | None = None
    notify: dict | None = None  # {urls, on} (tsubmit/jobs/notify.py)
    # How the job recovers, job.extras["recovery"]: {node_timeout, min_nodes, ...}; absent: the default.
    recovery: dict = field(default_factory=dict)

    @property
    def container(self) -> dict | None:
        """The container a rank runs in, or None for bare metal."""
        if not self.image:
            return None
        return {"image": self.image, "args": list(self.container_args), "pull": self.pull}


def validate_request(request: RunRequest) -> RunRequest:
    if not request.command or not request.command[0].strip():
        raise UsageError("no command given: put it after `--`, e.g. `tsubmit run -- python train.py`")
    if request.executor not in executors.NAMES:
        raise UsageError(f"unknown executor {request.executor!r}; choose one of {', '.join(executors.NAMES)}")
    launcher = torch_launcher(request.command)
    if launcher and executors.get(request.executor).node["torchrun"]:
        raise UsageError(f"the command starts {launcher} itself, but --executor {request.executor} already "
                         "runs it under torchrun (a launcher in a launcher): use --executor distributed "
                         "to run your launcher once per node, or drop it and give the script")
    if executors.get(request.executor).needs_image and not request.image:
        raise UsageError(f"--executor {request.executor} runs the command in a container: give --image IMAGE")
    if request.image is not None and not _IMAGE.match(request.image):
        raise UsageError(f"invalid image name {request.image!r}: no spaces or shell characters "
                         "(e.g. registry.example/team/train:1.2)")
    if request.pull not in PULL_POLICIES:
        raise UsageError(f"unknown --pull policy {request.pull!r}; choose one of {', '.join(PULL_POLICIES)}")
    if request.image:
        for key, value in request.env.items():
            if "\n" in value:
                raise UsageError(f"the value of {key} holds a newline, which a container's env file "
                                 "cannot carry")
    if not request.workdir.is_dir():
        raise UsageError(f"working directory {request.workdir} does not exist or is not a directory")
    if request.gpus is not None and request.gpus < 0:
        raise UsageError(f"--gpus must be 0 (no GPUs) or more (GPUs leased per node), got {request.gpus}")
    if request.max_restarts < 0:
        raise UsageError(f"--max-restarts must be 0 or more, got {request.max_restarts}")
    if request.recovery.get("restarts", 0) < 0:
        raise UsageError(f"--restarts must be 0 or more, got {request.recovery['restarts']}")
    if request.name is not None and (not request.name.strip() or _CONTROL.search(request.name)):
        raise UsageError(f"invalid job name {request.name!r}: it must be printable and not empty")
    for key, value in request.env.items():
        _check_env(key, value, "--env")
        _check_not_set_by_tsubmit(key, request.gpus)
    if request.setup is not None and request.image:
        raise UsageError("--setup runs on the node, outside the container: install what the job "
                         "needs in the image instead")
    from ..model.setup import settings

    request.setup_step = settings(request.setup, request.setup_key, request.workdir)
    return request


# Modules that are torch's launcher: `python -m torch.distributed.run` is torchrun.
_LAUNCHER_MODULES = ("torch.distributed.run", "torch.distributed.launch")


def torch_launcher(command: list[str]) -> str | None:
    """The torch launcher COMMAND starts (`torchrun`, `python -m torch.distributed.run`
    or `.launch`), as the user wrote it, or None."""
    program = Path(command[0]).name
    if program == "torchrun":
        return command[0]
    if not re.fullmatch(r"python[0-9.]*", program):
        return None
    arguments = iter(command[1:])
    for argument in arguments:
        if argument in ("-X", "-W"):
            next(arguments, None)  # python's options that take a value
        elif argument == "-m" or argument.startswith("-m"):
            module = argument[2:] or next(arguments, "")
            return f"{program} -m {module}" if module in _LAUNCHER_MODULES else None
        elif argument.startswith("-c") or not argument.startswith("-"):
            return None  # a program given as a string, or a script
    return None


def parse_env_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"malformed --env {pair!r}: expected KEY=VALUE")
        _check_env(key, value, "--env")
        env[key] = value
    return env


def load_env_file(path: Path) -> dict[str, str]:
    """A YAML mapping of strings, or a dotenv file (KEY=VALUE lines)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"cannot read env file {path}: {error.strerror}") from None
    # `KEY=note: x` is also a YAML mapping; a file of KEY=VALUE lines is dotenv.
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        loaded = None if all(_DOTENV_LINE.match(line) for line in lines) else yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if isinstance(loaded, dict):
        env = loaded
    elif loaded is None or isinstance(loaded, str):
        env = _parse_dotenv(path, text)  # names the first line that is not KEY=VALUE
    else:
        raise UsageError(f"env file {path} must be a mapping of variable names to strings")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(
                f"env file {path}: {key!r} must map to a string (quote numbers and booleans), "
                f"got {type(value).__name__}"
            )
        _check_env(key, value, f"env file {path}")
    return env


def _parse_dotenv(path: Path, text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if not match:
            raise UsageError(f"env file {path}, line {number}: expected KEY=VALUE")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def _check_env(key: str, value: str, origin: str) -> None:
    if not _ENV_KEY.match(key):
        raise UsageError(f"{origin}: invalid variable name {key!r} (letters, digits and _)")
    if "\x00" in value:
        raise UsageError(f"{origin}: the value of {key} contains a NUL byte")


def _check_not_set_by_tsubmit(key: str, gpus: int | None) -> None:
    """Refuse a variable tsubmit sets on the rank: overriding it would defeat the
    GPU lease, or hide the rank's processes from stop and status."""
    if key == "CUDA_VISIBLE_DEVICES" and gpus != 0:
        raise UsageError("the job's environment (--env, --env-file, env) may not set CUDA_VISIBLE_DEVICES: "
                         "tsubmit sets it to the GPUs each rank leased; choose how many with --gpus "
                         "(--gpus 0 leases none and lets the job set it)")
    if key.startswith("TSUBMIT_") and key not in JOB_SWITCHES:
        raise UsageError(f"the job's environment (--env, --env-file, env) may not set {key}: tsubmit "
                         "sets its TSUBMIT_* variables itself (the job's identity, and the marker by which "
                         f"stop and status find a rank's processes); only {', '.join(JOB_SWITCHES)} are "
                         "the job's to set")


def parse_duration(text: str) -> float:
    """'90m', '1h30m', '45s', '2d' or a number of seconds."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise UsageError(f"invalid duration {text!r}: use e.g. 90m, 1h30m, 45s or 2d")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _optuna_settings(spec: dict) -> dict | None:
    keys = ("study", "direction", "optuna_storage", "dashboard")
    executor = executors.BY_NAME.get(spec.get("executor") or executors.DEFAULT)
    if not (executor and executor.study_store):  # an unknown executor is named by validate_request
        given = [key for key in keys if spec.get(key)]
        if given:
            searches = " or ".join(e.name for e in executors.TABLE if e.study_store)
            raise UsageError(f"--{given[0].replace('_', '-')} goes with --executor {searches}")
        return None
    from ..optuna.storages import check_direction, resolve_storage

    return {"study": spec.get("study") or spec.get("name"),
            "direction": check_direction(spec.get("direction") or "minimize"),
            "storage": resolve_storage(spec.get("optuna_storage")),
            "dashboard": bool(spec.get("dashboard"))}


# Seconds a node may stay silent before it is lost (--node-timeout).
DEFAULT_NODE_TIMEOUT = 120.0


def _recovery_settings(spec: dict) -> dict:
    """The job's recovery settings (job.extras["recovery"]); hang_timeout only when given (default: off)."""
    settings = {"node_timeout": _spec_duration(spec, "node_timeout", DEFAULT_NODE_TIMEOUT)}
    if spec.get("hang_timeout") is not None:
        settings["hang_timeout"] = _spec_duration(spec, "hang_timeout", None)
    if spec.get("restarts"):
        settings["restarts"] = spec["restarts"]
    if spec.get("min_nodes") is not None:
        if spec["min_nodes"] < 1:
            raise UsageError(f"--min-nodes must be 1 or more, got {spec['min_nodes']}")
        settings["min_nodes"] = spec["min_nodes"]
    from .sync_dirs import check_paths

    sync_dirs = check_paths(spec.get("sync_dirs"))
    if sync_dirs:
        settings["sync_dirs"] = sync_dirs
    return settings


def _spec_duration(spec: dict, key: str, default: float | None) -> float | None:
    """The spec's KEY as seconds, more than 0 (DEFAULT when absent)."""
    if spec.get(key) is None:
        return default
    return positive_duration(str(spec[key]), f"--{key.replace('_', '-')}")


def positive_duration(text: str, option: str) -> float:
    """OPTION's DURATION in seconds, more than 0; else a UsageError naming OPTION."""
    try:
        seconds = parse_duration(text)
    except UsageError as error:
        raise UsageError(f"{option}: {error}") from None
    if seconds <= 0:
        raise UsageError(f"{option} must be more than 0 seconds, got {text!r}")
    return seconds


def _notify_settings(spec: dict) -> dict | None:
    """The job's notify and notify_on, else the config file's (tsubmit/local/user_config.py)."""
    from ..local import user_config
    from . import notify

    defaults = user_config.load() if "notify" not in spec or "notify_on" not in spec else {}
    urls = spec["notify"] if "notify" in spec else defaults.get("notify")
    events = spec["notify_on"] if "notify_on" in spec else defaults.get("notify_on")
    if spec.get("notify_on") and not urls:
        raise UsageError("--notify-on goes with --notify URL (or notify in the config file "
                         f"{user_config.path()})")
    return notify.settings(urls, events)


@dataclass
class Behaviour:
    """What `run` does around the submission: wait, follow, timeout, overlap policy."""

    wait: bool = False
    follow: bool = False
    timeout: float | None = None
    if_running: str = "allow"
    queue: bool = False  # wait while the GPUs are busy instead of exiting 5
    queue_timeout: float | None = None


def request_from_spec(spec: dict, asked_vault_file: str | None = None) -> tuple[RunRequest, Behaviour]:
    """One validated RunRequest (and how to run it) from a spec's keys (tsubmit/model/jobspec.py)."""
    from ..model.jobspec import POLICIES
    from ..nodes.clusters import select_cluster

    ref = select_cluster(spec.get("cluster"), spec.get("inventory"), spec.get("group"),
                         spec.get("limit"), asked_vault_file or spec.get("vault_password_file"))
    env = load_env_file(Path(spec["env_file"])) if spec.get("env_file") else {}
    env.update(spec.get("env") or {})
    request = validate_request(RunRequest(
        command=list(spec.get("command") or []), cluster=ref, workdir=Path(spec.get("workdir", ".")),
        executor=spec.get("executor") or executors.DEFAULT, name=spec.get("name"), env=env,
        gpus=spec.get("gpus"), max_restarts=spec.get("max_restarts") or 0,
        keep_going=bool(spec.get("keep_going")),
        image=spec.get("image"), container_args=list(spec.get("container_args") or []),
        pull=spec.get("pull") or "missing", hooks=dict(spec.get("hooks") or {}),
        optuna=_optuna_settings(spec),
        setup=spec.get("setup"), setup_key=spec.get("setup_key"), notify=_notify_settings(spec),
        recovery=_recovery_settings(spec),
    ))
    timeout = parse_duration(spec["timeout"]) if spec.get("timeout") is not None else None
    if_running = spec.get("if_running") or "allow"
    if if_running not in POLICIES:
        raise UsageError(f"unknown --if-running policy {if_running!r}; choose one of {', '.join(POLICIES)}")
    if if_running != "allow" and not request.name:
        raise UsageError(f"--if-running {if_running} is keyed on the job name: give --name")
    follow = bool(spec.get("follow"))
    queue_timeout = parse_duration(spec["queue_timeout"]) if spec.get("queue_timeout") is not None else None
    if queue_timeout is not None and not spec.get("queue"):
        raise UsageError("--queue-timeout goes with --queue")
    return request, Behaviour(wait=bool(spec.get("wait")) or follow or timeout is not None,
                              follow=follow, timeout=timeout, if_running=if_running,
                              queue=bool(spec.get("queue")), queue_timeout=queue_timeout)
