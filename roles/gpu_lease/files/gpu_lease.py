"""GPU leases on a node, in a folder shared by every user of the machine.

Usage:
  gpu_lease.py ids DECLARED                 the node's GPU ids, comma-separated
  gpu_lease.py folder DIR                   the folder to lease in (made when missing), after
                                            checking that nobody but root can subvert it
  gpu_lease.py take DIR LEASE COUNT IDS FD  lease COUNT of IDS (comma-separated) as file
                                            DIR/LEASE, which the caller holds open on FD
  gpu_lease.py usage DIR DECLARED           the node's GPUs and every live lease, as JSON
  gpu_lease.py hold MARKER                  return once no other process of the rank is left

A node's GPUs are the indexes `nvidia-smi --list-gpus` prints, else
0..DECLARED-1 (the host variable tsubmit_gpus: CPU nodes in tests and demos).

A lease is one file, DIR/<job id>.r<rank>.a<attempt>.lease (JSON: the job,
the controller that submitted it, the GPUs, since when), and it is alive
exactly while some process holds a shared flock(2) on it. The rank's launch
script opens it on a descriptor (FD) that every process of the rank inherits,
and `take` locks that open file: the lock belongs to the open file, so it
stays after `take` exits and goes when the last process holding the
descriptor ends, kill -9 and a crash included, with nobody's help. Readers
test a lease with a non-blocking exclusive lock, which any user can take on a
file they can read: it succeeds only on a dead lease. torchrun's workers do
not inherit it (Python's subprocess closes inherited descriptors), and may
outlive torchrun (kill -9): so when the rank's command ends, the launch script
runs `hold`, which keeps the descriptor open until no process carrying the
rank's marker (TSUBMIT_RANK_MARKER, as stop and status find them) is left.

DIR is owned by root, sticky and world-writable (mode 1777, as /dev/shm):
every user can lease, nobody can remove or overwrite another user's lease
(mode 0644), and a dead lease counts as free whoever owns it; its owner's next
`take` removes it. The owner of a sticky folder may remove any file in it, so
a DIR owned by another ordinary user is refused (exit 3): that user could
free everyone's leases. Only root can make DIR so (`tsubmit cluster check
--fix`, or the gpu_lease role with gpu_lease_create_dir and become); until
then an ordinary user leases in DIR-USER, a folder of their own that shares
with no one, and `folder` says so on stderr.
DIR/.lock serialises every take on the machine, so two submissions never get
the same GPU; it is opened read-only, which flock(2) allows, since a file of
another user in a sticky folder cannot be opened for writing with O_CREAT
(fs.protected_regular).
"""

import fcntl
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import time

BUSY = 5  # the exit code tsubmit reports too (tsubmit/errors.py, EXIT_CODES)


def node_gpus(declared: int) -> list[int]:
    return nvidia_gpus() or list(range(max(declared, 0)))


def nvidia_gpus() -> list[int]:
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True,
                                 timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        listing = None
    ids = []
    for line in (listing.stdout.splitlines() if listing and listing.returncode == 0 else []):
        head = line.split(":", 1)[0]  # "GPU 3: NVIDIA A100 (UUID: ...)"
        if head.startswith("GPU ") and head[4:].strip().isdigit():
            ids.append(int(head[4:]))
    return ids


def _lock_file(folder: str) -> int:
    path = os.path.join(folder, ".lock")
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.fchmod(descriptor, 0o644)
        return descriptor
    except FileExistsError:  # another user made it meanwhile
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)


REFUSED = 3  # a lease folder another user could subvert: tsubmit's launch failure
SHARED_FIX = ("run `tsubmit cluster check --fix` as a user who may become root (or the gpu_lease role "
              "with gpu_lease_create_dir and become): it makes the folder root's, mode 1777")


class Refused(Exception):
    """A lease folder nobody should lease in (the message says why, and the fix)."""


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def lease_folder(folder: str, create: bool) -> tuple[str, str]:
    """The folder this user leases in, and "" when every user of the node shares
    it, else a note saying it shares with no one. Raises Refused on a folder
    another ordinary user owns, or that others may write without the sticky bit."""
    me = os.geteuid()
    if os.path.lexists(folder):
        if _usable_owner(folder) == 0:
            return folder, ""
        return folder, (f"the GPU lease folder {folder} is {user_name(me)}'s, not root's: other users are "
                        f"refused there, so it shares with no one. Fix: {SHARED_FIX}")
    if me == 0:
        if create:
            _make(folder, 0o1777)
        return folder, ""
    own = f"{folder}-{user_name(me)}"
    if os.path.lexists(own):
        _usable_owner(own)
    elif create:
        _make(own, 0o755)
    return own, (f"no shared GPU lease folder {folder} on this node (only root may make one): leasing in "
                 f"{own}, which shares with no one, so another user's job may get the same GPUs. "
                 f"Fix: {SHARED_FIX}")


def _usable_owner(folder: str) -> int:
    """FOLDER's owner, once it is a folder nobody but root and this user can subvert
    (the owner of a sticky folder may remove anyone's file in it)."""
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise Refused(f"the GPU lease folder {folder} is not a folder (a link or a file); "
                      "set tsubmit_gpu_lease_dir to another path")
    if info.st_uid not in (0, os.geteuid()):
        owner = user_name(info.st_uid)
        raise Refused(f"the GPU lease folder {folder} is owned by {owner}, not root: {owner} could remove "
                      f"every other user's leases and so take their GPUs, so tsubmit refuses it. "
                      f"Fix: {SHARED_FIX}; or set tsubmit_gpu_lease_dir")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise Refused(f"the GPU lease folder {folder} (mode {stat.S_IMODE(info.st_mode):04o}) is not "
                      f"sticky: any user can remove every lease in it. Fix: {SHARED_FIX}")
    return info.st_uid


def _make(folder: str, mode: int) -> None:
    try:
        os.mkdir(folder, mode)
        os.chmod(folder, mode)  # mkdir's mode passes through the umask
    except FileExistsError:  # made meanwhile: by whom decides
        _usable_owner(folder)
    except OSError as error:
        fail(f"cannot create the GPU lease folder {folder}: {error.strerror}; "
             "set tsubmit_gpu_lease_dir to a folder on a local filesystem")


def live_leases(folder: str, skip: str = "") -> list[dict]:
    """Every live lease in FOLDER; the caller's own dead ones are removed."""
    leases = []
    me = os.getuid()
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".lease") or name == skip:
            continue
        path = os.path.join(folder, name)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed meanwhile, or not ours to read
        try:
            info = os.fstat(descriptor)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: alive
            else:  # nobody holds it: its rank has ended
                if info.st_uid == me:
                    os.unlink(path)
                continue
            try:
                lease = json.loads(os.read(descriptor, 65536) or b"{}")
            except ValueError:
                lease = {}
            if not isinstance(lease, dict) or not lease.get("gpus"):
                continue  # still being written by a take, which holds the folder lock
            lease["user"], lease["lease"] = user_name(info.st_uid), name
            leases.append(lease)
        finally:
            os.close(descriptor)
    return leases


def report(ids: list[int], leases: list[dict]) -> dict:
    used = {gpu for lease in leases for gpu in lease["gpus"]}
    return {"host": socket.gethostname(), "boot_id": boot_id(), "gpus": ids,
            "free": [gpu for gpu in ids if gpu not in used], "leases": leases}


def boot_id() -> str:
    """This boot of the machine: two hosts with the same one and lease folder are one machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def take(folder: str, name: str, count: int, ids: list[int], descriptor: int, job_file: str) -> None:
    """FOLDER is what `folder` answered, and the caller has opened FOLDER/NAME on DESCRIPTOR."""
    lock = _lock_file(folder)
    fcntl.flock(lock, fcntl.LOCK_EX)  # one take at a time on this machine
    try:
        # Held from here on, before anyone can see the GPUs as taken.
        fcntl.flock(descriptor, fcntl.LOCK_SH)
        os.fchmod(descriptor, 0o644)  # every user reads it; only its owner writes it
        state = report(ids, live_leases(folder, skip=name))
        if len(state["free"]) < count:
            print(json.dumps({**state, "wanted": count, "lease_dir": folder}))
            sys.exit(BUSY)
        try:
            with open(job_file) as handle:
                job = json.load(handle)
        except (OSError, ValueError):
            job = {}
        chosen = state["free"][:count]
        lease = {"job_id": job.get("id"), "job_name": job.get("name"),
                 "submitted_by": job.get("submitted_by"), "gpus": chosen, "since": int(time.time())}
        path = os.path.join(folder, name)
        with open(path, "r+") as handle:  # the caller created it, empty
            handle.write(json.dumps(lease))
        print(",".join(map(str, chosen)))
    finally:
        os.close(lock)


def usage(shared: str, declared: int) -> None:
    ids = node_gpus(declared)
    try:
        folder, note = lease_folder(shared, create=False)
    except Refused as refused:
        print(json.dumps({**report(ids, []), "free": [], "lease_dir": shared, "problem": str(refused)}))
        fail(str(refused), REFUSED)
    leases = []
    if os.path.isdir(folder):
        lock = _lock_file(folder)
        fcntl.flock(lock, fcntl.LOCK_SH)  # no take is halfway
        try:
            leases = live_leases(folder)
        finally:
            os.close(lock)
    print(json.dumps({**report(ids, leases), "lease_dir": folder, "shared": not note, "note": note}))


def hold(marker: str, poll: float = 0.5) -> None:
    """Return once no process of the rank is left but this one and the launch
    script that waits for it: the lease descriptor both hold stays open until then."""
    # The node_lib helper shipped beside this file in a launch (only `hold` runs there).
    from tsubmit_procs import marked_processes

    ours = {os.getpid(), os.getppid()}
    while any(pid not in ours for pid in marked_processes().get(marker, ())):
        time.sleep(poll)


def main(argv: list[str]) -> None:
    if argv[:1] == ["ids"]:
        print(",".join(map(str, node_gpus(int(argv[1])))))
    elif argv[:1] == ["folder"]:
        try:
            folder, note = lease_folder(argv[1], create=True)
        except Refused as refused:
            fail(str(refused), REFUSED)
        if note:
            print(f"tsubmit: {note}", file=sys.stderr)
        print(folder)
    elif argv[:1] == ["take"]:
        folder, name, count, ids, descriptor, job_file = argv[1:7]
        take(folder, name, int(count), [int(i) for i in ids.split(",") if i], int(descriptor), job_file)
    elif argv[:1] == ["usage"]:
        usage(argv[1], int(argv[2]))
    elif argv[:1] == ["hold"]:
        hold(argv[1])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
