"""``prune --blocks B`` against plain NNrelief: test accuracy, remaining weights and speed.

LeNet-300-100 and LeNet-5 on the packaged MNIST digits (mnist5k: 4,500 training, 500 test
images), trained once densely, then pruned by NNrelief twice from the same weights with the
same schedule: plain, and with --blocks B (connections only inside each unit's group). The
LeNet-300-100 --blocks run, stopped like plain at 5% of the weights, prunes with alpha_fc
0.99 (BLOCKS_SCHEDULES): its first pass already drops (B - 1) / B of the connections, and
with plain's 0.95 it reached 4.4% in 3 passes (93.0-93.4% accuracy) against plain's 10.
Each pruned model is exported with --sparse-compute auto (the plain one also with off).

  dense       the trained dense model exported by torch.onnx
  plain off   plain NNrelief, compaction alone
  plain auto  plain NNrelief, sparse compute
  blocks auto NNrelief --blocks B, sparse compute
  blocks b64  the same, tuned for batch 64 alone (--tune-batch 64: a cover that gains at
              batch 64 may lose a few microseconds at batch 1, which the default refuses)

Latency: medians of interleaved runs at batch 1 and 64 (1 thread), repeated --runs times
with fresh sessions; speed-ups against dense.

Target (issue "Sparse compute"): LeNet-300-100 at <= 5% of the weights, blocks auto >= 4x
dense at batch 64, test accuracy within 0.5 points of plain NNrelief.

Usage: .venv/bin/python tools/bench_blocks.py [--blocks 4] [--runs 3] [--json F]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from relief_export import data, models
from relief_export.pipeline import export_onnx
from relief_export.prune import FitConfig, ReliefConfig, fit, relief
from relief_export.table import format_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_suite import latency

SCHEDULES = {  # as tools/bench_suite.py prunes the LeNets
    "lenet300_100": (20, ReliefConfig(iterations=15, target_remaining=0.05,
                                      finetune=FitConfig(epochs=15))),
    "lenet5": (8, ReliefConfig(iterations=8, finetune=FitConfig(epochs=4))),
}
# --blocks runs to the same remaining weights: its first pass drops (B - 1) / B of the
# connections, so a gentler keep rule gives it about as many fine-tuning passes as plain
BLOCKS_SCHEDULES = {"lenet300_100": {"alpha_fc": 0.99, "iterations": 40}, "lenet5": {}}


def pruned(arch: str, blocks: int) -> dict[str, tuple[torch.nn.Module, dict]]:
    full, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    train, val = data.train_val_split(full, 0.1, 0)
    epochs, schedule = SCHEDULES[arch]
    torch.manual_seed(0)
    dense = models.build(arch)
    fit(dense, train, FitConfig(epochs=epochs), val, progress=False)
    result = {}
    for name, count in (("plain", 1), (f"blocks {blocks}", blocks)):
        model = copy.deepcopy(dense)
        torch.manual_seed(0)
        config = replace(schedule, blocks=count,
                         **(BLOCKS_SCHEDULES[arch] if count > 1 else {}))
        history = relief(model, train, config, val_data=val, test_data=test,
                         progress=False).history
        result[name] = (model.eval(), history[-1])
    result["dense"] = (dense.eval(), {})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()[0]:.2f}")
    blocked = f"blocks {args.blocks}"
    accuracy_rows, speed_rows, records = [], [], []
    with tempfile.TemporaryDirectory() as temp:
        for arch in SCHEDULES:
            runs = pruned(arch, args.blocks)
            shape = models.input_shape(arch)
            folder = Path(temp)
            files = {"dense": folder / f"{arch}-dense.onnx",
                     "plain off": folder / f"{arch}-plain-off.onnx",
                     "plain auto": folder / f"{arch}-plain-auto.onnx",
                     "blocks auto": folder / f"{arch}-blocks-auto.onnx",
                     "blocks b64": folder / f"{arch}-blocks-b64.onnx"}
            export_onnx(runs["plain"][0], files["plain off"], input_shape=shape,
                        dense_out=files["dense"])
            export_onnx(runs["plain"][0], files["plain auto"], input_shape=shape,
                        sparse_compute="auto")
            report = export_onnx(runs[blocked][0], files["blocks auto"], input_shape=shape,
                                 sparse_compute="auto")
            export_onnx(runs[blocked][0], files["blocks b64"], input_shape=shape,
                        sparse_compute="auto", tune_batches=[64])
            for name in ("plain", blocked):
                final = runs[name][1]
                accuracy_rows.append([arch, name, f"{100 * final['remaining_weights']:.2f}%",
                                      f"{100 * final['test_accuracy']:.2f}%"])
            times = medians(latency(files, tuple(shape[1:]), args.runs))
            for batch, ms in times.items():
                speed_rows.append([arch, batch, *(f"{ms[k]:.3f}" for k in files),
                                   *(f"{ms['dense'] / ms[k]:.2f}x" for k in list(files)[1:])])
            records.append({"model": arch, "ms": times,
                            "final": {name: runs[name][1] for name in ("plain", blocked)},
                            "blocks_layers": report.sparse_compute})
    print(format_table(["model", "pruning", "weights left", "test accuracy"], accuracy_rows))
    print(format_table(["model", "batch", "dense ms", "plain off ms", "plain auto ms",
                        "blocks auto ms", "blocks b64 ms", "plain off", "plain auto",
                        "blocks auto", "blocks b64"], speed_rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, default=str))


def medians(runs: dict[int, dict[str, list[float]]]) -> dict[int, dict[str, float]]:
    """The median over runs of each file's per-run median (ms)."""
    return {batch: {name: float(np.median(v)) for name, v in ms.items()}
            for batch, ms in runs.items()}


if __name__ == "__main__":
    main()
