"""DDP that takes its process group down before the process exits.

Lightning destroys the process group only for NCCL (at interpreter exit); with gloo the group is
left to the interpreter's shutdown. Rank 0 hosts the group's TCP store and exits as soon as it has
handed back its results, while rank 1 may still be tearing down: rank 1's gloo threads then lose
their peer and die with a C++ exception, "terminate called without an active exception" and
SIGABRT. Here every rank meets the others at a barrier when its work is done and then destroys
the group itself, while all peers are still alive.
"""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerStatus


class CleanExitDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose teardown ends the process group on every rank, in step."""

    def teardown(self) -> None:
        module = self.lightning_module
        trainer = module._trainer if module is not None else None
        super().teardown()
        if not (dist.is_available() and dist.is_initialized()):
            return
        # After an error only some ranks may get here: a barrier could wait forever.
        if trainer is None or trainer.state.status != TrainerStatus.INTERRUPTED:
            dist.barrier()
        dist.destroy_process_group()
