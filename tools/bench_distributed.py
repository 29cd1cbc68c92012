"""NNrelief under torchrun on this machine: iteration time with 1 and 2 processes, and the
bytes each rank all-reduces per iteration (the calibration statistics) for VGG-16.

Usage: .venv/bin/python tools/bench_distributed.py [--arch lenet5] [--epochs 2]

1. Trains ARCH on mnist5k (2 epochs), then runs one NNrelief iteration with --epochs of
   fine-tuning as `relief-export prune` (1 process) and under `torchrun --nproc_per_node 2`
   (gloo), and prints the iteration's seconds from each run's history, with the load.
2. Streams 8 CIFAR-sized samples through VGG-16 and counts what reduce_activity all-reduces:
   per conv layer the [out, in] float64 sums of per-slice norms (paper scores), per Linear
   the [in] sums of |x|, per watched value (activations, residual inputs) the channel maxima
   and the [C, H, W] sums of |v|. The Gram matrices the conv scores may use are reduced to
   per-slice norms inside each batch, so they are never sent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from relief_export import models
from relief_export.prune.activity import collect
from relief_export.prune.distributed import LOCAL, reduce_activity
from relief_export.prune.structure import discover
from relief_export.table import format_table


def iteration_seconds(arch: str, epochs: int) -> list[list]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        subprocess.run([sys.executable, "-m", "relief_export", "train", "--arch", arch,
                        "--data", "mnist5k", "--epochs", "2", "--out", str(work / "d.pt")],
                       check=True, capture_output=True)
        prune = ["-m", "relief_export", "prune", str(work / "d.pt"), "--data", "mnist5k",
                 "--iterations", "1", "--epochs", str(epochs)]
        runs = {1: [sys.executable, *prune],
                2: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", *prune]}
        for processes, command in runs.items():
            out = work / f"p{processes}.pt"
            subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
            history = torch.load(out, weights_only=True)["history"]
            rows.append([arch, processes, f"{history[1]['seconds']:.1f}",
                         f"{100 * history[1]['test_accuracy']:.2f}%"])
    return rows


def allreduced_bytes(arch: str = "vgg16") -> list[list]:
    torch.manual_seed(0)
    model = models.build(arch).eval()
    structure = discover(model)
    watch = [*structure.activation_of.values(),
             *(side.node for _, *sides in structure.residual_adds for side in sides)]
    activity = collect(model, structure.layers, torch.rand(8, *models.input_shape(arch)[1:]),
                       "paper", structure.graph_module, watch)
    layers = sum(s.total.numel() * s.total.element_size() for s in activity.layers.values()
                 if s.total is not None)
    total = reduce_activity(activity, LOCAL)
    return [[arch, f"{layers:,}", f"{total - layers:,}", f"{total:,}",
             f"{total / 2**20:.2f} MiB"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average, {os.cpu_count()} cores)")
    print(format_table(["model", "processes", "iteration seconds", "test accuracy"],
                       iteration_seconds(args.arch, args.epochs)))
    print(format_table(["model", "layer statistics B", "value statistics B",
                        "all-reduced per iteration B", ""], allreduced_bytes()))
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
