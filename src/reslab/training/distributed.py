"""torchrun support: DistributedDataParallel over gloo (CPU) or NCCL (CUDA).

``torchrun --nproc_per_node N -m reslab train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; each
rank trains on its own shard with ``batch_size / N`` images per step (the same global batch
as one process), and only rank 0 writes files and logs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from reslab.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> Dist:
    """Join the process group torchrun describes in the environment (no-op otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return Dist(rank, world_size, local_rank)


def global_batch_to_local(batch_size: int, world: Dist) -> int:
    if batch_size % world.world_size:
        raise ConfigError(
            f"batch_size {batch_size} does not divide over {world.world_size} processes: "
            f"choose a multiple of {world.world_size}"
        )
    return batch_size // world.world_size


def teardown(world: Dist, *, finished: bool) -> None:
    """Leave the process group. After a finished run every rank first waits for the others
    (rank 0 still evaluates on the test split): gloo aborts a process that destroys its
    connections while a peer is still using the group."""
    if world.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_sum(values: list[float], world: Dist) -> list[float]:
    """Each value summed over all ranks (per-rank loss sums, correct counts, images)."""
    if not world.enabled:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def broadcast_buffers(modules: list[torch.nn.Module], world: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) of these modules."""
    if not world.enabled:
        return
    for module in dict.fromkeys(modules):  # the same module once
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def replicas_agree(model: torch.nn.Module, world: Dist) -> bool:
    """Whether every rank holds bitwise the same parameters and buffers (checked by
    gathering each rank's exact bytes hash)."""
    if not world.enabled:
        return True
    import hashlib

    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    mine = digest.hexdigest()
    gathered: list[str | None] = [None] * world.world_size
    dist.all_gather_object(gathered, mine)
    return all(h == mine for h in gathered)


def check_replicas(model: torch.nn.Module, world: Dist, when: str) -> None:
    """Refuse (TrainingError) to go on when the ranks hold different weights ``when``."""
    if not world.enabled:
        return
    if not replicas_agree(model, world):
        raise TrainingError(f"the {world.world_size} processes hold different weights {when}")
    if world.is_main:
        log.info("weights identical on all %d ranks %s", world.world_size, when)
