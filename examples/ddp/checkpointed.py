"""A DDP training loop that checkpoints and resumes: what `--restarts` needs.

    tsubmit run -c gpus --restarts 3 --sync-dir ckpt -- python checkpointed.py

Rank 0 saves the model, the optimizer and the step in ckpt/latest.pt every
--every steps (a temporary file, then a rename: a crash while writing leaves
the last good checkpoint). At its start rank 0 loads the newest checkpoint it
finds there and hands it to every rank, so all of them go on from its step,
whichever node holds the folder. Runs on CPUs with gloo (or GPUs with nccl).

--fail-at-step S makes rank 1 exit 3 at step S of the first attempt, to see
a restart happen (tsubmit sets TSUBMIT_ATTEMPT and TSUBMIT_RESTART_CAUSE).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

CHECKPOINT = Path("ckpt") / "latest.pt"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write per line: ranks on a node share one log
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=2, help="steps between two checkpoints")
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--fail-at-step", type=int)
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu")
    attempt = int(os.environ.get("TSUBMIT_ATTEMPT", "1"))
    if rank == 0:
        cause = os.environ.get("TSUBMIT_RESTART_CAUSE")
        say(f"attempt {attempt}" + (f", after: {cause}" if cause else ""))

    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    # Rank 0's checkpoint, for every rank: the other nodes need no copy of the folder.
    state = [torch.load(CHECKPOINT, map_location="cpu") if rank == 0 and CHECKPOINT.exists() else None]
    dist.broadcast_object_list(state, src=0)
    start = 0
    if state[0] is not None:
        model.module.load_state_dict(state[0]["model"])
        optimizer.load_state_dict(state[0]["optimizer"])
        start = state[0]["step"]
        if rank == 0:
            say(f"resumed from step {start}")

    for step in range(start + 1, args.steps + 1):
        if rank == 1 and step == args.fail_at_step and attempt == 1:
            say(f"rank 1 fails at step {step}")
            os._exit(3)
        inputs = torch.randn(16, 4, device=device)
        loss = (model(inputs) - inputs.sum(dim=1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(args.step_seconds)
        if rank == 0 and step % args.every == 0:
            CHECKPOINT.parent.mkdir(exist_ok=True)
            partial = CHECKPOINT.with_suffix(".partial")
            torch.save({"model": model.module.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step}, partial)
            partial.replace(CHECKPOINT)
            say(f"step {step} loss {loss.item():.4f}: checkpoint saved")
    dist.barrier()
    if rank == 0:
        say(f"done: {args.steps} steps, {args.steps - start} of them in attempt {attempt}")
    dist.destroy_process_group()
    os._exit(0)  # see allreduce.py: gloo may abort while the interpreter shuts down


if __name__ == "__main__":
    main()
