"""Errors a user can act on, each with the exit code cron and scripts rely on.

The exit codes are a public contract: EXIT_CODES says what each means, and
the docs' reference (docs/reference/exit-codes.md) is generated from it.
"""

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_LAUNCH = 3
EXIT_REFUSED = 4
EXIT_BUSY = 5
EXIT_INTERRUPTED = 130

# Each code's short name (for `tsubmit --help`) and what it means (for the reference).
EXIT_CODES = {
    EXIT_OK: ("ok", "success"),
    EXIT_JOB_FAILED: ("job failed", "the job (or one of its ranks) failed, or `--timeout` was exceeded"),
    EXIT_USAGE: ("bad usage or input", "the message names the problem; nothing was started"),
    EXIT_LAUNCH: ("cluster unreachable or launch failed",
                  "the cluster could not be reached or the launch failed on some node: one line per "
                  "failing host; whatever had started was stopped and removed"),
    EXIT_REFUSED: ("refused by the overlap policy", "`--if-running fail` while a job of that name runs"),
    EXIT_BUSY: ("GPUs busy", "some node has fewer free GPUs than the job asks (leased by other jobs, named "
                "with their user and controller); nothing was started; `--queue` waits instead, and "
                "exits 5 after `--queue-timeout`"),
    EXIT_INTERRUPTED: ("interrupted", "Ctrl-C or SIGTERM, in any command: a launch in flight is rolled "
                       "back (whatever had started was stopped and removed, the job is recorded as "
                       "`stopped`); a wait (`run --wait`, `--queue`) ends and leaves the job as it is; "
                       "the message says which"),
}


class TsubmitError(Exception):
    """An error whose message is meant for the user, printed without a traceback."""

    exit_code = EXIT_JOB_FAILED


class UsageError(TsubmitError):
    """Bad usage or input: the message names the problem and what to do."""

    exit_code = EXIT_USAGE


class LaunchError(TsubmitError):
    """The cluster could not be reached or the launch failed on some node."""

    exit_code = EXIT_LAUNCH

    def __init__(self, message: str, host_errors: dict[str, str] | None = None):
        super().__init__(message)
        self.host_errors = host_errors or {}


class JobFailed(TsubmitError):
    """The job (or one of its ranks) failed."""

    exit_code = EXIT_JOB_FAILED
