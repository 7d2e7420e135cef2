"""Training across processes with torch.distributed, as started by `torchrun`.

Every rank draws the same epoch permutation (same seed, same generator state) and takes its
shard of each global batch: rank r of W gets positions r, r+W, r+2W, ... of the batch, so the W
shards together are exactly the batch one process would have used, and averaging the ranks'
gradients gives that batch's gradient. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch of example indices."""
        return index[self.rank :: self.size] if self.distributed else index

    def average_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce `tensor` in place to the mean over ranks."""
        if self.distributed:
            dist.all_reduce(tensor)
            tensor.div_(self.size)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_from_environment(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, ...), if any.

    gloo on the CPU, NCCL on CUDA, where each rank takes the GPU of its LOCAL_RANK.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """The device of this rank: its own GPU under torchrun with CUDA, else `device`."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
