"""An Optuna search for `tsubmit run --executor optuna`: one worker per node, one shared study.

    tsubmit run -c CLUSTER --executor optuna --study demo --workdir examples/optuna -- python search.py 20

Each node's worker runs N trials (argv[1], else $N_TRIALS, else 10) against the
job's study, which `tsubmit_optuna.load_study()` finds from the environment
tsubmit sets (the helper module is on PYTHONPATH; tsubmit need not be installed
on the nodes). The objective fits a line with SGD on the CPU, and records on
each trial the node that ran it. $TRIAL_SECONDS makes each trial last at least
that long (to watch a search in the dashboard).
"""

import os
import sys
import time

import torch
import tsubmit_optuna


def objective(trial) -> float:
    started = time.monotonic()
    trial.set_user_attr("node", os.environ["NODE_RANK"])
    lr = trial.suggest_float("lr", 1e-4, 0.5, log=True)
    momentum = trial.suggest_float("momentum", 0.0, 0.95)
    torch.manual_seed(trial.number)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = 3 * x + 2 + 0.05 * torch.randn_like(x)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for step in range(50):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        trial.report(loss.item(), step) if step % 10 == 9 else None
    remaining = float(os.environ.get("TRIAL_SECONDS", "0")) - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)
    return loss.item()


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("N_TRIALS", "10"))
    torch.set_num_threads(1)
    study = tsubmit_optuna.load_study()
    study.optimize(objective, n_trials=trials)
    mine = [t for t in study.trials if t.user_attrs.get("node") == os.environ["NODE_RANK"]]
    print(f"node {os.environ['NODE_RANK']}: ran {len(mine)} trials of study {study.study_name}; "
          f"best so far {study.best_value:.6f} with {study.best_params}", flush=True)


if __name__ == "__main__":
    main()
