"""A Lightning Trainer(strategy="ddp") on the CPU: Lightning starts the node's
processes itself (its own launcher) from the variables tsubmit sets (a test job)."""

import os

import lightning as L
import torch


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, index):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=4)
trainer = L.Trainer(accelerator="cpu", devices=int(os.environ["NPROC_PER_NODE"]),
                    num_nodes=int(os.environ["NNODES"]), strategy="ddp", max_steps=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Model(), data)
print(f"lightning global_rank {trainer.global_rank} of {trainer.world_size} "
      f"node_rank {trainer.node_rank}", flush=True)
