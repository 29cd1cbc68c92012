"""Run by tests/prune/test_distributed.py under torchrun (2 processes, gloo, CPU).

Each rank streams its shard of the same seeded calibration samples through a seeded CIFAR
ResNet-20, all-reduces the statistics, runs relief_step, and saves what it saw to
OUT/rank{R}.pt: the reduced statistics, the masks and their digest. It then checks that a
disagreement between ranks is reported on every rank.
"""

import sys
from pathlib import Path

import torch

from relief_export import models
from relief_export.errors import ReliefError
from relief_export.prune.activity import collect
from relief_export.prune.distributed import World, reduce_activity, tensor_digest
from relief_export.prune.relief import relief_step
from relief_export.prune.structure import discover

SAMPLES = 51  # not a multiple of the number of processes


def calibration() -> torch.Tensor:
    return torch.rand(SAMPLES, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build("resnet20").eval()


def statistics(net, inputs, world):
    structure = discover(net)
    activity = collect(net, structure.layers, inputs, "paper", structure.graph_module,
                       structure.watched())
    reduce_activity(activity, world)
    return {**{f"layer/{n}": s.total / s.count for n, s in activity.layers.items()},
            **{f"value/{node.name}": v.abs_sum / v.count for node, v in activity.values.items()},
            **{f"max/{node.name}": v.channel_max for node, v in activity.values.items()}}


def main(out: Path) -> None:
    world = World.from_environment()
    shard = calibration()[world.shard(SAMPLES)]
    stats = statistics(model(), shard, world)
    masks = relief_step(model(), shard, world=world)
    try:
        world.check_identical("test digests", f"rank {world.rank}")
        disagreement = "not reported"
    except ReliefError as error:
        disagreement = str(error)
    torch.save({"stats": stats, "masks": masks, "digest": tensor_digest(masks),
                "samples": len(shard), "disagreement": disagreement},
               out / f"rank{world.rank}.pt")
    world.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
