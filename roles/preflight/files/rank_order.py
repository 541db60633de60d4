"""tsubmit: torch's node ranks follow tsubmit's (installed as sitecustomize.py).

With `--rdzv-backend=c10d`, torchrun ignores `--node-rank` and numbers the
nodes by sorting their rendezvous descriptors, `_NodeDesc(addr, pid,
local_id)` (torch/distributed/elastic/rendezvous/dynamic_rendezvous.py,
`sorted(state.participants)`): by address, so the head, rank 0 for tsubmit,
got torch's global rank 0 only when its address sorted first.

The preflight role puts this file in `<job dir>/tsubmit-lib/sitecustomize.py`
and the launch script puts that folder on torchrun's PYTHONPATH, so Python
runs it when torchrun starts. Until torch's rendezvous module is imported it
only installs an import hook; then it

* makes every descriptor this node creates carry tsubmit's rank (NODE_RANK,
  set for every rank) in the high bits of `local_id` (the address stays the
  node's real address: rank 0's is torch's bootstrap address), and
* orders descriptors by that rank first, on every node: whichever node
  completes a round sorts the participants the same way.

So GROUP_RANK == NODE_RANK == tsubmit's rank and the head holds global ranks
0..P-1, whatever the addresses' order; the rendezvous itself (c10d on the
head, re-run by torchrun for every restart of the whole group) is unchanged,
so `--max-restarts` still restarts every node's workers together. For those
restarts to work it also sets TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (unless
the job sets it): with the store shared between the rendezvous and the
workers (torch's default since 2.4) the workers' keys have no per-round
prefix, and a node whose workers were restarted for another node's failure
(its TORCHELASTIC_RESTART_COUNT unchanged) read the first round's gloo
addresses and failed in connectFullMesh. Unshared, rank 0's agent (the head,
at its rendezvous address) serves the workers a fresh store each round. The folder
leaves PYTHONPATH again before torchrun starts its workers, so the job's own
processes never import this; a `sitecustomize` later on sys.path still runs.
TSUBMIT_RANK_ORDER=off in the job's environment turns it off.

It also binds the rendezvous store, the TCP store torchrun's agent on the
head serves without authentication, to the rendezvous address instead of
every interface: torch listens on all of them whatever the endpoint's host,
and takes a bound socket of ours (TCPStore's master_listen_fd). Where that
address cannot be bound here (not this machine's), torch binds as before.
"""

import importlib.machinery
import importlib.util
import os
import socket
import sys

_TARGET = "torch.distributed.elastic.rendezvous.dynamic_rendezvous"
_STORE_BACKEND = "torch.distributed.elastic.rendezvous.c10d_rendezvous_backend"
_HERE = os.path.dirname(os.path.abspath(__file__))
# local_id counts handlers in one process (a handful); the rank sits above it.
_RANK_UNIT = 1 << 40


def _key(desc):
    return (desc.local_id // _RANK_UNIT, desc.addr, desc.pid, desc.local_id)


def _patch(module) -> None:
    desc_type = getattr(module, "_NodeDesc", None)
    generator = getattr(module, "_NodeDescGenerator", None)
    try:
        rank = int(os.environ["NODE_RANK"])
    except (KeyError, ValueError):
        return
    if desc_type is None or generator is None or getattr(generator, "_tsubmit", False):
        return  # another torch layout: torch's own order
    generate = generator.generate

    def ranked_generate(self, local_addr=None):
        desc = generate(self, local_addr)
        return desc_type(desc.addr, desc.pid, rank * _RANK_UNIT + desc.local_id)

    def comparison(name):
        compare = getattr(tuple, name)

        def method(self, other):
            if not isinstance(other, desc_type):
                return NotImplemented
            return compare(_key(self), _key(other))

        return method

    for name in ("__lt__", "__le__", "__gt__", "__ge__"):
        setattr(desc_type, name, comparison(name))
    generator.generate = ranked_generate
    generator._tsubmit = True
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    _leave_pythonpath()


def _bind_store(module) -> None:
    """The backend's TCPStore, its server listening on the rendezvous address only."""
    store_type = getattr(module, "TCPStore", None)
    if store_type is None or getattr(module, "_tsubmit_bound", False):
        return

    def bound_store(host, port, *args, is_master=False, **kwargs):
        listener = _listener(host, port) if is_master and "master_listen_fd" not in kwargs else None
        if listener is None:  # a client, or an address torch must bind itself
            return store_type(host, port, *args, is_master=is_master, **kwargs)
        descriptor = listener.detach()  # the store's from here on
        try:
            return store_type(host, port, *args, is_master=True, master_listen_fd=descriptor, **kwargs)
        except BaseException:
            os.close(descriptor)
            raise

    module.TCPStore = bound_store
    module._tsubmit_bound = True


def _listener(host, port):
    """A socket listening on HOST:PORT, or None where that cannot be (torch binds then)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, protocol)
    except (OSError, IndexError, TypeError):
        return None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(socket.SOMAXCONN)
    except OSError:  # not this machine's address, or a store of this process serves the port
        listener.close()
        return None
    return listener


def _leave_pythonpath() -> None:
    """The workers torchrun starts inherit its environment: not this folder."""
    entries = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
               if entry and os.path.abspath(entry) != _HERE]
    if entries:
        os.environ["PYTHONPATH"] = os.pathsep.join(entries)
    else:
        os.environ.pop("PYTHONPATH", None)


# The import hook and _chain() below have a twin in roles/optuna_store/files/
# sitecustomize.py, on purpose: each shim is shipped alone into a folder of its
# own and runs in every Python the job starts, before anything else, so it
# imports nothing but the standard library (a helper module missing or shadowed
# there would turn into "Error in sitecustomize" in every process of the job).
# This one is given its target and patch: it patches two of torch's modules.
class _RendezvousHook:
    """A meta path finder that patches a module of torch's rendezvous (TARGET, with
    PATCH) once it is loaded."""

    def __init__(self, target=_TARGET, patch=None):
        self.target, self.patch = target, patch or _patch

    def find_spec(self, name, path=None, target=None):
        if name != self.target:
            return None
        sys.meta_path.remove(self)  # once; the real finders find the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    patches = {_STORE_BACKEND: _bind_store}
    if os.environ.get("TSUBMIT_RANK_ORDER", "on").lower() in ("off", "0", "false", "no"):
        _leave_pythonpath()
    else:
        patches[_TARGET] = _patch
    for target, patch in patches.items():
        if target in sys.modules:
            patch(sys.modules[target])
        else:
            sys.meta_path.insert(0, _RendezvousHook(target, patch))


def _chain() -> None:
    """Run the next sitecustomize on sys.path, which this file shadows."""
    others = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install()
_chain()
