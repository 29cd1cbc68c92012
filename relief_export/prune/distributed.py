"""NNrelief across processes (torchrun): who this process is, and the collective steps.

``World.from_environment()`` joins the process group torchrun describes (``WORLD_SIZE``,
``RANK``, ``MASTER_ADDR`` ...; backend nccl on CUDA, gloo on CPU); without torchrun it is the
one-process world, where every collective is the identity. What is distributed:
- calibration: each rank streams samples ``rank, rank + size, ...`` of the iteration's
  calibration set; the sums are all-reduced before any decision (``reduce_activity``), so
  the masks are those one process computes on all samples;
- fine-tuning: DistributedDataParallel with a DistributedSampler reshuffled every epoch;
- evaluation: each rank scores a shard, the counts are all-reduced.
Masks are then checked bit-identical on every rank (``check_identical``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ReliefError
from .activity import Activity


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes (rank 0 writes files and prints)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls, device: str = "cpu") -> World:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, count: int) -> list[int]:
        """This rank's share of ``count`` items: rank, rank + size, ... (any count works)."""
        return list(range(self.rank, count, self.size))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over ranks (in place; returned for convenience)."""
        if self.distributed:
            dist.all_reduce(tensor, dist.ReduceOp.SUM)
        return tensor

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, dist.ReduceOp.MAX)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (stop requests, errors)."""
        return bool(self.max(torch.tensor([int(flag)])).item())

    def gather(self, item: Any) -> list[Any]:
        """Every rank's ``item``, in rank order, on every rank."""
        if not self.distributed:
            return [item]
        items: list[Any] = [None] * self.size
        dist.all_gather_object(items, item)
        return items

    def check_identical(self, what: str, digest: str) -> None:
        """Raise on every rank unless ``digest`` is the same on all of them."""
        digests = self.gather(digest)
        if len(set(digests)) != 1:
            raise ReliefError(f"{what} differ between ranks ({', '.join(d[:12] for d in digests)})")

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


LOCAL = World()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{list(value.shape)}|{value.dtype}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def reduce_activity(activity: Activity, world: World) -> int:
    """All-reduce every statistic in place (sums, counts; maxima for channel maxima), in a
    fixed order; returns the bytes each rank contributed."""
    sent = 0
    for name in sorted(activity.layers):
        stats = activity.layers[name]
        assert stats.total is not None
        sent += _reduce(world, [stats.total])
        stats.count = _reduce_count(world, stats.count)
    for node in sorted(activity.values, key=lambda n: n.name):
        value = activity.values[node]
        assert value.abs_sum is not None and value.channel_max is not None
        sent += _reduce(world, [value.abs_sum])
        world.max(value.channel_max)
        sent += value.channel_max.numel() * value.channel_max.element_size()
        value.count = _reduce_count(world, value.count)
    activity.samples = _reduce_count(world, activity.samples)
    return sent


def _reduce(world: World, tensors: Sequence[torch.Tensor]) -> int:
    for tensor in tensors:
        world.sum(tensor)
    return sum(t.numel() * t.element_size() for t in tensors)


def _reduce_count(world: World, count: int) -> int:
    return int(world.sum(torch.tensor([count], dtype=torch.int64)).item())
