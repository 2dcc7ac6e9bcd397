"""Process-group setup for multi-GPU / multi-node training launched with `torchrun`.

`torchrun --nproc_per_node N -m qualiclip_cli train ...` sets RANK, LOCAL_RANK and WORLD_SIZE (plus
MASTER_ADDR/MASTER_PORT); we initialise the process group from them: NCCL when training on CUDA, gloo on the
CPU. Without those variables (or with WORLD_SIZE=1) training is a single process and nothing here does
anything. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    initialised_here: bool = False  # we created the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> DistInfo:
    """`device` is the resolved device kind ("cpu", "cuda", "cuda:N", "mps"); under torchrun on CUDA each
    process takes GPU LOCAL_RANK."""
    import torch.distributed as dist

    if not launched_distributed():
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    world = int(os.environ["WORLD_SIZE"])
    kind = device.split(":")[0]
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif kind != "cpu":
        from qualiclip_cli.core.errors import UsageError

        raise UsageError(f"distributed training supports CUDA (nccl) and the CPU (gloo), not {device}")
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world)
        created = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device, initialised_here=created)


def cleanup(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.enabled:
        if info.device.startswith("cuda"):
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a tensor over processes (for logging)."""
    import torch.distributed as dist

    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / info.world_size


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every process hold rank 0's buffers (batch-norm running statistics trained per process)."""
    import torch.distributed as dist

    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)
