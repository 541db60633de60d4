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
"""

import importlib.machinery
import importlib.util
import os
import sys

_TARGET = "torch.distributed.elastic.rendezvous.dynamic_rendezvous"
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
class _RendezvousHook:
    """A meta path finder that patches torch's dynamic rendezvous once it is loaded."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)  # once; the real finders find the module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    if os.environ.get("TSUBMIT_RANK_ORDER", "on").lower() in ("off", "0", "false", "no"):
        _leave_pythonpath()
        return
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    else:
        sys.meta_path.insert(0, _RendezvousHook())


def _chain() -> None:
    """Run the next sitecustomize on sys.path, which this file shadows."""
    others = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_install()
_chain()
