"""Errors a user can act on, each with the exit code cron and scripts rely on.

The exit codes are a public contract (README, "Exit codes"):
0 success, 1 the job (or a rank) failed, 2 bad usage or input,
3 the cluster could not be reached or the launch failed, 4 refused by policy,
5 the GPUs the job asks for are busy on some node (leased by other jobs),
130 interrupted.
"""

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_LAUNCH = 3
EXIT_REFUSED = 4
EXIT_BUSY = 5


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
