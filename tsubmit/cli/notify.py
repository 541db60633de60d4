"""`tsubmit notify ...`: the notification endpoints (tsubmit/jobs/notify.py)."""

import click


@click.group()
def notify():
    """Notifications of jobs' ends (apprise URLs: --notify URL, spec key notify)."""


@notify.command("test")
@click.argument("urls", metavar="URL...", nargs=-1, required=True)
def test(urls):
    """Send a test message to each URL; exit 3 if one was not delivered."""
    from ..errors import LaunchError
    from ..jobs.notify import mask, send_test

    failures = {}
    for url in urls:
        try:
            send_test(url)
            click.echo(f"test notification delivered to {mask(url)}")
        except LaunchError as error:
            failures[mask(url)] = str(error)
    if failures:
        raise LaunchError("some test notifications were not delivered", failures)
