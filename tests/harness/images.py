"""A container image built locally, without any registry: a tiny root
filesystem (the shell and a few coreutils with their libraries, copied from
this machine) imported into the test user's podman storage; and the cluster
that runs jobs in it."""

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

IMAGE = "localhost/tsubmit-test:latest"
SANDBOX_ARGS = ["--ulimit=nofile=1024:1024", "--ulimit=nproc=4096:4096", "--shm-size=256m"]
PROGRAMS = ("sh", "env", "ls", "cat", "sleep", "printenv", "echo", "sort")


def _libraries(program: str) -> list[str]:
    listing = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    return [word for line in listing.splitlines() for word in line.split() if word.startswith("/")]


def build_image(user: str) -> str:
    """Import the image for USER (rootless podman keeps images per user); returns its name."""
    if not shutil.which("podman"):
        raise RuntimeError("podman is not installed (scripts/setup.sh --test installs it)")
    with tempfile.TemporaryDirectory(prefix="tsubmit-image-") as folder:
        root = Path(folder) / "root"
        (root / "bin").mkdir(parents=True)
        for name in PROGRAMS:
            program = shutil.which(name)
            shutil.copy2(program, root / "bin" / name)
            for library in _libraries(program):
                target = root / library.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(library, target)
        archive = Path(folder) / "root.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        Path(folder).chmod(0o755)
        archive.chmod(0o644)
        subprocess.run(["runuser", "-u", user, "--", "podman", "import", str(archive), IMAGE],
                       cwd="/", check=True, capture_output=True)
    return IMAGE


def remove_image(user: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", "podman", "rmi", "--force", IMAGE], cwd="/",
                   capture_output=True)


def container_cluster(cli, nodes, count: int = 2, **extra) -> None:
    """The cluster "c" of the first COUNT nodes, running jobs under podman with SANDBOX_ARGS."""
    cli.write_cluster("c", nodes, nodes.nodes[:count], tsubmit_container_engine="podman",
                      tsubmit_container_run_args=SANDBOX_ARGS, **extra)
