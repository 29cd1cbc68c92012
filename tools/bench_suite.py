"""The benchmark suite: lenet300_100, lenet5, vgg16 and resnet56 (32x32), dense vs pruned.

Masks: the LeNets are pruned by NNrelief on the packaged MNIST digits (trained here, or read
from --checkpoints DIR holding lenet300_100.pt and lenet5.pt from `relief-export demo`);
vgg16 and resnet56 have no data set offline, so they get NNrelief-like masks from
relief_export.bench.masks (10% of the weights in whole kernel slices, a quarter of the units
dead) -- a stand-in with NNrelief's structure, not NNrelief.

One table: parameters, nonzeros, parameters after compaction; file sizes of the masked model
exported densely by torch.onnx, the same with sparse_initializer (COO) weights, onnxslim on
the masked model, and ours; onnxruntime latency (1 thread, median of interleaved runs) at
batch 1 and 64 for the masked dense export and ours; MAC limit (dense MACs / our MACs) and
measured speed-up / limit. Timing is repeated --runs times with fresh sessions; the spread
is max / min of the per-run medians.

Targets (batch 64, 1 thread): speed-up >= 0.8 x MAC limit for vgg16 and resnet56; LeNet-300-100
at <= 5% of its weights >= 2.5x faster than dense.

Usage: .venv/bin/python tools/bench_suite.py [--checkpoints demo_out] [--runs 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch

from relief_export import data, models, read_model, save_checkpoint
from relief_export.bench.graph_stats import graph_stats
from relief_export.bench.latency import create_session, time_interleaved
from relief_export.pipeline import export_onnx
from relief_export.prune import FitConfig, ReliefConfig, fit, relief
from relief_export.table import format_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_export import masked_checkpoint, sparse_initializer_bytes

REPEATS = {1: 50, 64: 10}


def nnrelief_lenet(arch: str, folder: Path, source: Path | None) -> Path:
    if source is not None and (source / f"{arch}.pt").is_file():
        return source / f"{arch}.pt"
    full, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    train, val = data.train_val_split(full, 0.1, 0)
    torch.manual_seed(0)
    model = models.build(arch)
    fit(model, train, FitConfig(epochs=20 if arch == "lenet300_100" else 8), val,
        progress=False)
    plan = ReliefConfig(iterations=15, target_remaining=0.05,
                        finetune=FitConfig(epochs=15)) if arch == "lenet300_100" else \
        ReliefConfig(iterations=8, finetune=FitConfig(epochs=4))
    result = relief(model, train, plan, val_data=val, test_data=test, progress=False)
    return save_checkpoint(folder / f"{arch}.pt", model, arch={"name": arch, "kwargs": {}},
                           input_shape=models.input_shape(arch), data="mnist5k",
                           history=result.history)


def suite_checkpoints(folder: Path, lenets: Path | None) -> dict[str, Path]:
    """The suite's four checkpoints (LeNets from ``lenets`` when it holds them)."""
    return {"lenet300_100": nnrelief_lenet("lenet300_100", folder, lenets),
            "lenet5": nnrelief_lenet("lenet5", folder, lenets),
            "vgg16": masked_checkpoint("vgg16", folder),
            "resnet56": masked_checkpoint("resnet56", folder)}


def slimmed_bytes(dense: Path) -> int:
    return len(onnxslim.slim(onnx.load(dense)).SerializeToString())


def latency(files: dict[str, Path], shape: tuple[int, ...], runs: int
            ) -> dict[int, dict[str, list[float]]]:
    """Per batch: per-run medians (ms) of every file, timed interleaved (A B C A B C ...),
    each run with fresh sessions."""
    result: dict[int, dict[str, list[float]]] = {}
    for batch, repeats in REPEATS.items():
        feed = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
        medians: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(runs):
            sessions = {name: create_session(str(path), 1)[0] for name, path in files.items()}
            for name, samples in time_interleaved(sessions, feed, 3, repeats).items():
                medians[name].append(1e3 * float(np.median(samples)))
        result[batch] = medians
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows, records = [], []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        sources = suite_checkpoints(folder, args.checkpoints)
        for arch, checkpoint in sources.items():
            ours, dense = folder / f"{arch}.onnx", folder / f"{arch}-dense.onnx"
            report = export_onnx(checkpoint, ours, dense_out=dense)
            loaded = read_model(checkpoint)
            remaining = loaded.history[-1]["remaining_weights"] if loaded.history else None
            dense_stats, our_stats = graph_stats(dense), graph_stats(ours)
            timing = latency({"dense": dense, "ours": ours}, our_stats.input_shape, args.runs)
            limit = dense_stats.macs / our_stats.macs
            record = {"model": arch, "masks": "NNrelief" if loaded.history else "NNrelief-like",
                      "remaining_weights": remaining, "parameters": report.params_dense,
                      "nonzero": report.params_nonzero, "compacted": report.params_compact,
                      "bytes_dense": report.dense_file_bytes,
                      "bytes_sparse_initializer": sparse_initializer_bytes(dense),
                      "bytes_onnxslim": slimmed_bytes(dense), "bytes_ours": report.file_bytes,
                      "mac_limit": limit, "timing_ms": timing}
            for batch in REPEATS:
                d, o = (float(np.median(timing[batch][k])) for k in ("dense", "ours"))
                record[f"speedup_{batch}"] = d / o
                record[f"spread_{batch}"] = max(max(v) / min(v) for v in timing[batch].values())
            records.append(record)
            rows.append([arch, record["masks"], f"{report.params_dense:,}",
                         f"{report.params_nonzero:,}", f"{report.params_compact:,}",
                         f"{record['bytes_dense']:,}", f"{record['bytes_sparse_initializer']:,}",
                         f"{record['bytes_onnxslim']:,}", f"{record['bytes_ours']:,}",
                         *(f"{float(np.median(timing[b][k])):.3f}" for b in REPEATS
                           for k in ("dense", "ours")),
                         f"{limit:.2f}x", f"{record['speedup_64']:.2f}x",
                         f"{record['speedup_64'] / limit:.2f}",
                         f"{max(record['spread_1'], record['spread_64']):.3f}"])
    print(format_table(["model", "masks", "params", "nonzero", "compacted", "torch.onnx B",
                        "sparse_init B", "onnxslim B", "ours B", "b1 dense ms", "b1 ours ms",
                        "b64 dense ms", "b64 ours ms", "MAC limit", "b64 speed-up",
                        "measured/limit", "spread"], rows))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
