"""`tsubmit` and `python -m tsubmit`.

Ctrl-C or SIGTERM while the command's modules load (a second or more on a
loaded machine) exits 130 with a message, as it does later: without this
Python would die by the signal, and SIGTERM would kill it without a word.
"""

from .interrupts import exit_interrupted, interrupt_on_signals


def main() -> None:
    interrupt_on_signals()
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        exit_interrupted()
    command()


if __name__ == "__main__":
    main()
