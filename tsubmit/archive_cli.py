"""Pack a working directory as `tsubmit run` does, for running tsubmit's roles
from your own playbook (examples/playbook/):

    python -m tsubmit.archive_cli WORKDIR [DEST_DIR] > archive.json
    ansible-playbook -i hosts.yml launch.yml -e @archive.json ...

Prints the extra-vars that name the archive, as JSON: tsubmit_job_archive
(the .tar.gz, absolute) and tsubmit_job_archive_digest (its content hash,
which names the copy cached on each node). DEST_DIR defaults to tsubmit's
own archive folder in its state directory (TSUBMIT_HOME/state/archives, else
XDG_STATE_HOME/tsubmit/archives, else ~/.local/state/tsubmit/archives), so a
tree already packed is not packed again; `tsubmit gc --older-than T` removes
archives there that no recorded job uses, so give DEST_DIR to keep one.
"""

import argparse
import json
import sys
from pathlib import Path

from .errors import EXIT_INTERRUPTED, EXIT_USAGE
from .local.archive import pack
from .paths import ensure_private_dir, state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tsubmit.archive_cli",
        description="Pack WORKDIR (honouring .gitignore and .tsubmitignore) into DEST_DIR/<digest>.tar.gz "
                    "and print the extra-vars tsubmit_job_archive and tsubmit_job_archive_digest as JSON.")
    parser.add_argument("workdir", type=Path, help="the tree to pack")
    parser.add_argument("dest", type=Path, nargs="?",
                        help="folder for the archive (default: tsubmit's archive folder, "
                             f"{state_dir() / 'archives'}, which `tsubmit gc` cleans of archives "
                             "no recorded job uses)")
    args = parser.parse_args(argv)
    dest = args.dest or ensure_private_dir(state_dir() / "archives")
    try:
        archive = pack(args.workdir, dest)
    except OSError as error:
        print(f"archive_cli: cannot archive {args.workdir}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # the half-written archive was removed
        print(f"archive_cli: interrupted while packing {args.workdir}; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps({
        "tsubmit_job_archive": str(archive.path.resolve()),
        "tsubmit_job_archive_digest": archive.digest,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
