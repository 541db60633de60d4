"""`tsubmit run`: archive, record, launch on every node, roll back on failure."""

import json
import time
from dataclasses import dataclass

from . import ansible_env, executors, gpu_leases, hooks, kept_inventories, layout, node_actions
from . import archive as archives
from .ansible_run import FULL_DISK, PlaybookRun, cluster_hosts, run_playbook
from .clusters import ClusterRef, Node, ResolvedCluster, host_variables, resolve
from .errors import LaunchError, UsageError
from .interrupts import Deferred, Interrupted
from .job import Job, Rank, friendly_name, new_job_id
from .paths import ensure_private_dir, state_dir
from .render import launch_variables, render
from .spec import RunRequest
from .states import FAILED, RUNNING, STOPPED
from .store import JobStore
from .views import public_extras

# The launch role's tasks that start a rank and print "PID STARTTICKS EPOCH":
# the first, unless pre-launch hooks make the start a task of its own.
START_TASKS = ("Ship the job's tree and launch script, and start the rank", "Start the rank detached")
# submit.yml's roles.
SUBMIT_ROLES = ("preflight", "launch")


@dataclass
class Plan:
    """A job ready to launch: the record, its cluster, and per-host variables."""

    job: Job
    cluster: ResolvedCluster

    def host_vars(self) -> dict[str, dict]:
        return {
            node.name: {"tsubmit_nproc": self.job.gpus or node.gpus or 0}
            for node in self.cluster.nodes
        }

    def skipped_steps(self) -> list[str]:
        """Tags of submit.yml's steps this job has nothing to do in. A skipped
        tag is decided once, on the controller; a false `when` still costs
        every host a worker process."""
        used = hooks.kinds_used({node.name: node.vars for node in self.cluster.nodes},
                                hooks.job_extravars(self.job.extras))
        return unused_steps(self.job, used)

    def role_validation(self) -> dict:
        """Extra-vars that skip the roles' argument-spec validation when tsubmit
        has checked every variable they read: a validation is a task per host
        and role, about a fifth of a submit. The inventory's tsubmit_* variables
        are checked while resolving the cluster (clusters.resolve) and its
        hooks by hooks.check; the rest are tsubmit's own extra-vars. A role
        replaced on TSUBMIT_ANSIBLE_PATH keeps the validation."""
        replaced = any((folder / role).is_dir()
                       for folder in ansible_env.user_paths() for role in SUBMIT_ROLES)
        return {} if replaced else {"tsubmit_validate_roles": False}


def unused_steps(job: Job, hook_kinds: set[str]) -> list[str]:
    steps = [] if executors.get(job.executor).study_store else ["optuna"]
    if not hook_kinds & {"pre_launch_roles", "pre_launch_tasks"}:
        steps.append("pre_launch_hooks")
    if "post_launch_tasks" not in hook_kinds:
        steps.append("post_launch_hooks")
    return steps


def plan(request: RunRequest) -> Plan:
    cluster = resolve(request.cluster)
    fewest = request.recovery.get("min_nodes")
    if fewest is not None and fewest > len(cluster.nodes):
        names = ", ".join(node.name for node in cluster.nodes)
        raise UsageError(f"--min-nodes {fewest} is more than the job's {len(cluster.nodes)} node"
                         f"{'s' if len(cluster.nodes) > 1 else ''} ({names})")
    ansible_env.user_paths()  # a wrong TSUBMIT_ANSIBLE_PATH fails here, before anything is recorded
    job = Job(
        id=new_job_id(),
        name=request.name or friendly_name(),
        cluster=request.cluster.name,
        inventory={**request.cluster.as_dict(), "head_reason": cluster.head_reason},
        executor=request.executor,
        command=list(request.command),
        workdir=str(request.workdir.resolve()),
        env=dict(request.env),
        gpus=request.gpus,
        max_restarts=request.max_restarts,
        keep_going=request.keep_going,
        git_commit=archives.git_commit(request.workdir),
        extras={key: value for key, value in
                (("container", request.container), ("hooks", request.hooks), ("optuna", request.optuna),
                 ("setup", request.setup_step), ("notify", request.notify), ("recovery", request.recovery))
                if value},
        ranks=[Rank(node.rank, node.name, node.address, nproc=request.gpus or node.gpus)
               for node in cluster.nodes],
    )
    hooks.check({node.name: node.vars for node in cluster.nodes}, hooks.job_extravars(job.extras))
    if job.extras.get("optuna") and not job.extras["optuna"]["study"]:
        job.extras["optuna"]["study"] = job.name  # the generated name
    return Plan(job, cluster)


def replan(job: Job) -> Plan:
    """The plan of a recorded job's next attempt: its own hosts, ranks,
    addresses and processes per node, with the inventory's variables read
    again, so that a restart launches with the same extra-vars, skipped steps
    and rendering as `run`; a host gone from the inventory, or a hook file gone
    from the controller, is refused before anything changes."""
    inventory = job.inventory
    ref = ClusterRef(job.cluster, kept_inventories.next_attempt_sources(inventory),
                     inventory.get("group") or "all", inventory.get("limit"),
                     inventory.get("vault_password_file"))
    variables = host_variables(ref.sources, [rank.host for rank in job.ranks], ref.vault_password_file,
                               reveal=False)
    nodes = [Node(rank.host, rank.rank, rank.address, rank.nproc, variables[rank.host]) for rank in job.ranks]
    hooks.check({node.name: node.vars for node in nodes}, hooks.job_extravars(job.extras))
    return Plan(job, ResolvedCluster(ref, nodes, inventory.get("head_reason") or ""))


def extravars(job: Job, archive: archives.Archive | None) -> dict:
    return {
        "tsubmit_job_id": job.id,
        "tsubmit_job_name": job.name,
        "tsubmit_job_attempt": job.attempt,
        "tsubmit_job_restart_cause": job.restart_cause(),
        # What the roles run (`docker` runs distributed's template, in the container).
        "tsubmit_job_executor": executors.get(job.executor).runs,
        "tsubmit_job_command": job.command,
        "tsubmit_job_env": job.env,
        "tsubmit_job_max_restarts": job.max_restarts,
        # GPUs leased per node: None all of the node's, 0 none (docs/how-to/sharing-gpus.md).
        "tsubmit_job_gpus": job.gpus,
        "tsubmit_job_nodes": [rank.host for rank in job.ranks],
        "tsubmit_job_container": job.extras.get("container"),
        "tsubmit_job_optuna": job.extras.get("optuna"),
        "tsubmit_job_setup": job.extras.get("setup"),
        "tsubmit_job_min_nodes": (job.extras.get("recovery") or {}).get("min_nodes"),
        **hooks.job_extravars(job.extras),
        "tsubmit_job_archive": str(archive.path) if archive else "<archive>",
        "tsubmit_job_archive_digest": archive.digest if archive else "<digest>",
        "tsubmit_job_meta": {
            "id": job.id,
            "name": job.name,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job.created_at)),
            "git_commit": job.git_commit,
            "command": job.command,
            "executor": job.executor,
            # Who holds the GPUs, in the rank's lease (roles/gpu_lease).
            "submitted_by": gpu_leases.submitter(),
        },
    }


def dry_run(the_plan: Plan) -> dict:
    """What a run would do, without touching any node."""
    job, cluster = the_plan.job, the_plan.cluster
    host_vars = the_plan.host_vars()
    ranks = []
    masked = {key: "<set>" for key in job.env}  # job variables may be secrets
    for node in cluster.nodes:
        variables = {**launch_variables(job, cluster, node, job.gpus), "launch_job_env": masked}
        if variables["launch_optuna"]:
            storage = public_extras(job.extras)["optuna"]["storage"]
            variables["launch_optuna"] = {**variables["launch_optuna"], "storage_url": storage}
        ranks.append({
            "rank": node.rank,
            "host": node.name,
            "address": node.address,
            "command": render("command.sh.j2", variables).strip(),
            "environment": render("environment.sh.j2", variables).strip(),
        })
    secret_free = {**extravars(job, None), "tsubmit_job_env": masked,
                   "tsubmit_job_optuna": public_extras(job.extras).get("optuna")}
    return {
        "inventory": {node.name: {"tsubmit_rank": node.rank, "tsubmit_node_address": node.address,
                                  **host_vars[node.name]} for node in cluster.nodes},
        "inventory_sources": cluster.ref.sources,
        "head": {"host": cluster.nodes[0].name, "reason": cluster.head_reason},
        "extravars": secret_free,
        "ranks": ranks,
    }


def pack(the_plan: Plan, workdir) -> archives.Archive:
    try:
        archive = archives.pack(workdir, ensure_private_dir(state_dir() / "archives"))
    except OSError as error:
        raise UsageError(f"cannot archive {workdir}: {error}") from None
    the_plan.job.archive = archive.digest
    return archive


def check(the_plan: Plan, workdir, *, verbose: int = 1) -> dict[str, dict]:
    """The submit playbook in Ansible's check mode with diff: what would change
    where (shown by Ansible itself); nothing is started, nothing recorded.
    Returns each host's {command, environment} as the launch role rendered them."""
    the_plan.cluster.require_vault_password()
    run = _run_submit_playbook(the_plan, pack(the_plan, workdir), verbose=verbose, check=True)
    failures = run.failures()
    if failures or run.status != "successful":
        raise LaunchError("the check found problems", failures)
    return {host: json.loads(result.results.get(START_TASKS[0], {}).get("stdout") or "{}")
            for host, result in run.hosts.items()}


def submit(the_plan: Plan, workdir, store: JobStore, *, on_event=None, verbose: int = 0) -> Job:
    """Pack, record, launch on every node; roll back everything on a failure or an interrupt."""
    job = the_plan.job
    the_plan.cluster.require_vault_password()
    try:  # packing touches no node: an interrupt ends it at once, and nothing is cached
        archive = pack(the_plan, workdir)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while packing {workdir}; nothing was recorded or started") from None
    job.launcher = node_actions.launcher_identity()
    # The job keeps the connection details it was launched with, whatever becomes of its cluster.
    kept_inventories.launching_from(job.inventory, job.inventory["sources"])
    store.save(job)  # recorded before anything remote happens

    def roll_back(failures: dict[str, str] | None) -> str:
        was_interrupted = failures is None
        acted = node_actions.act(job, "cleanup", [rank.host for rank in job.ranks],
                              grace=node_actions.ROLLBACK_GRACE, verbose=verbose)
        job.move_to(STOPPED if was_interrupted else FAILED)
        job.ended_at, job.launcher = time.time(), None
        for rank in job.ranks:
            rank.move_to(FAILED if rank.host in (failures or {}) else STOPPED)
        store.save(job, patient=True)
        left = (f"; {', '.join(acted.failures)} could not be cleaned up and stay pending "
                f"(`tsubmit delete {job.id}` once they answer)" if acted.failures
                else "; nothing was left running")
        if was_interrupted:
            return f"interrupted: the launch of job {job.id} was rolled back{left}; recorded as stopped"
        return f"launch of job {job.id} failed{left}"

    launch(job, store, target(the_plan, archive), roll_back=roll_back, on_event=on_event,
           verbose=verbose)
    return job


@dataclass
class Target:
    """Where and with what submit.yml runs: the one launch path of run and restart."""

    sources: list[str]
    hosts: dict[str, dict]
    extravars: dict
    skip_tags: list[str]
    vault_password_file: str | None
    remote_roots: dict[str, str]  # per host, as the inventory gives it


def target(the_plan: Plan, archive: archives.Archive) -> Target:
    """What run and restart launch with: the same extra-vars, skipped steps and rendering."""
    cluster = the_plan.cluster
    return Target(cluster.ref.sources, cluster_hosts(cluster, the_plan.host_vars()),
                  {**extravars(the_plan.job, archive), **the_plan.role_validation()},
                  the_plan.skipped_steps(), cluster.ref.vault_password_file,
                  {node.name: layout.host_value(node.vars, "remote_root") for node in cluster.nodes})


def launch(job: Job, store: JobStore, target: Target, *, roll_back, on_event=None, verbose: int = 0) -> None:
    """Run submit.yml and record the started ranks. On a failure, or a signal,
    ROLL_BACK(failures by host, or None when interrupted) undoes the launch
    everywhere once the play has ended on every node, and returns the message
    to raise with."""
    with Deferred("rolling back once the launch has ended on every node") as interrupted:
        try:
            run = _submit_playbook(target, on_event=on_event, verbose=verbose, cancel=interrupted.forced)
        except Interrupted:  # a second signal: the play was cancelled
            run = None
        if interrupted or run is None:
            raise Interrupted(roll_back(None))
        failures = run.failures()
        if run.status == "successful" and not failures:
            failures = unstarted(job, run)
        if failures or run.status != "successful":
            failures = full_disks_named(failures, target.remote_roots) or {
                "ansible": f"the submit playbook {run.status}; see {run.data_dir}/artifacts"}
            busy = gpu_leases.busy_nodes(failures)
            one_machine = gpu_leases.one_machine(job, busy)
            message = roll_back(failures)
            job.message = "; ".join(f"{host}: {text}" for host, text in failures.items())
            if busy:
                job.message = one_machine or gpu_leases.busy_message(busy)
            store.save(job, patient=True)
            if one_machine:
                raise LaunchError(f"{message}: {one_machine}",
                                  {host: gpu_leases.node_busy(report) for host, report in busy.items()})
            if busy:
                raise gpu_leases.GpusBusy(message, busy)
            raise LaunchError(message, failures)
        record_started(job, run)
        job.launcher = None
        # The ranks run: their record is written however long another process holds the store,
        # and a signal meanwhile rolls them back once it is, as it said.
        store.save(job, patient=True)
        if interrupted:
            raise Interrupted(roll_back(None))


def full_disks_named(failures: dict[str, str], remote_roots: dict[str, str]) -> dict[str, str]:
    """FAILURES, with a node's full disk said as what it is and where, before the line that says it."""
    def named(host: str, message: str) -> str:
        found = FULL_DISK.search(message)
        if not found:
            return message
        what = "no space left" if found.group() == "No space left on device" else "disk quota exceeded"
        return f"{what} on {host} in {remote_roots.get(host, layout.DEFAULT_ROOT)} ({message})"

    return {host: named(host, message) for host, message in failures.items()}


def _run_submit_playbook(the_plan: Plan, archive: archives.Archive, **options) -> PlaybookRun:
    return _submit_playbook(target(the_plan, archive), **options)


def _submit_playbook(target: Target, **options) -> PlaybookRun:
    """submit.yml on the target's nodes, without the steps and checks it has no need of."""
    return run_playbook("submit", target.sources, target.hosts, target.extravars,
                        skip_tags=target.skip_tags, vault_password_file=target.vault_password_file,
                        **options)


def _printed_pid(run: PlaybookRun, host: str) -> str:
    results = run.hosts[host].results
    return next((results[task]["stdout"] for task in reversed(START_TASKS)
                 if results.get(task, {}).get("stdout", "").strip()), "")


def unstarted(job: Job, run: PlaybookRun) -> dict[str, str]:
    """Hosts whose launch printed no pid: a replaced launch role that does not keep the contract."""
    return {rank.host: f"the launch role printed no pid; the task that starts a rank must be named "
                       f"{' or '.join(map(repr, START_TASKS))} and print 'PID STARTTICKS EPOCH'"
            for rank in job.ranks if not _printed_pid(run, rank.host)}


def record_started(job: Job, run: PlaybookRun) -> None:
    """Take each rank's pid and start time from what its launch script printed."""
    for rank in job.ranks:
        pid, ticks, started = _printed_pid(run, rank.host).split()[:3]
        rank.pid, rank.pid_start, rank.started_at = int(pid), ticks, float(started)
        rank.move_to(RUNNING)
    job.move_to(RUNNING)
