"""HF accelerate on the CPU, started by `accelerate launch` on every node: each
process adds its index + 1 across all of them (a test job)."""

import os

import torch
from accelerate import Accelerator

accelerator = Accelerator(cpu=True)
total = accelerator.reduce(torch.tensor([accelerator.process_index + 1.0]), reduction="sum")
print(f"accelerate process {accelerator.process_index} of {accelerator.num_processes} "
      f"sum {total.item():g}", flush=True)
# torch 2.13's CPU gloo sometimes aborts at interpreter exit ("terminate called
# without an active exception"), as examples/ddp/allreduce.py notes: leave the
# group first (end_training destroys it), then exit without the interpreter's teardown.
accelerator.wait_for_everyone()
accelerator.end_training()
os._exit(0)
