"""Sparse compute: dense fp32 vs compaction alone vs compaction + sparse compute, 1 thread.

Models (random weights, no data set needed): VGG-16 and ResNet-56 with
- hidden groups: each layer's units and channels drawn into 8 groups, a connection kept only
  inside its group, under random channel orders (relief_export.bench.masks.hidden_group_masks);
- NNrelief-like masks as they are (relief_export.bench.masks.relief_like_masks).

  dense      the masked model exported densely by torch.onnx
  off        relief-export MODEL --out X.onnx --sparse-compute off (compaction alone)
  auto       relief-export MODEL --out X.onnx --sparse-compute auto

Latency: medians of interleaved runs (dense off auto dense off auto ...) at batch 1 and 64,
repeated --runs times with fresh sessions; speed-ups against dense. Also printed: export
seconds of auto (with tuning), and per layer of auto what the cover gained and what was chosen.

Targets (issue "Sparse compute"): VGG-16 hidden groups auto >= 3.0x dense at batch 64 and
>= 2.5x at batch 1; NNrelief-like masks auto / off >= 0.97 at both batch sizes.

Usage: .venv/bin/python tools/bench_sparse.py [--runs 3] [--models vgg16,resnet56] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from relief_export import models
from relief_export.bench.latency import create_session, time_interleaved
from relief_export.bench.masks import hidden_group_masks, relief_like_masks
from relief_export.pipeline import export_onnx
from relief_export.table import format_table

REPEATS = {1: 40, 64: 6}
MASKS = {"hidden groups": lambda m: hidden_group_masks(m, groups=8, seed=0),
         "NNrelief-like": lambda m: relief_like_masks(m, seed=0)}


def build(arch: str, masks: str, folder: Path) -> tuple[dict[str, Path], dict]:
    torch.manual_seed(0)
    model = models.build(arch).eval()
    MASKS[masks](model)
    stem = folder / f"{arch}-{masks.replace(' ', '_')}"
    files = {"dense": Path(f"{stem}-dense.onnx"), "off": Path(f"{stem}-off.onnx"),
             "auto": Path(f"{stem}-auto.onnx")}
    shape = models.input_shape(arch)
    export_onnx(model, files["off"], input_shape=shape, dense_out=files["dense"])
    start = time.perf_counter()
    auto = export_onnx(model, files["auto"], input_shape=shape, sparse_compute="auto")
    return files, {"seconds": time.perf_counter() - start, "layers": auto.sparse_compute}


def latency(files: dict[str, Path], shape: list[int], runs: int) -> dict[int, dict[str, float]]:
    result = {}
    for batch, repeats in REPEATS.items():
        feed = np.random.default_rng(0).random((batch, *shape[1:]), dtype=np.float32)
        medians: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(runs):
            sessions = {name: create_session(str(path), 1)[0] for name, path in files.items()}
            for name, samples in time_interleaved(sessions, feed, 3, repeats).items():
                medians[name].append(1e3 * float(np.median(samples)))
        result[batch] = {name: float(np.median(v)) for name, v in medians.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="vgg16,resnet56")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()[0]:.2f}")
    rows, records = [], []
    with tempfile.TemporaryDirectory() as temp:
        for arch in args.models.split(","):
            for masks in MASKS:
                files, auto = build(arch, masks, Path(temp))
                times = latency(files, models.input_shape(arch), args.runs)
                chosen = [layer for layer in auto["layers"] if layer["chosen"] == "cover"]
                for batch, ms in times.items():
                    rows.append([arch, masks, batch, f"{ms['dense']:.2f}", f"{ms['off']:.2f}",
                                 f"{ms['auto']:.2f}", f"{ms['dense'] / ms['off']:.2f}x",
                                 f"{ms['dense'] / ms['auto']:.2f}x",
                                 f"{ms['off'] / ms['auto']:.2f}x"])
                records.append({"model": arch, "masks": masks, "ms": times,
                                "export_seconds": auto["seconds"], "layers": auto["layers"]})
                print(f"{arch} / {masks}: sparse compute chose blocks for {len(chosen)} of "
                      f"{len(auto['layers'])} layers; export with tuning "
                      f"{auto['seconds']:.1f} s", file=sys.stderr)
                print(layer_table(auto["layers"]))
    print(format_table(["model", "masks", "batch", "dense ms", "off ms", "auto ms",
                        "off vs dense", "auto vs dense", "auto vs off"], rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


def layer_table(layers: list[dict]) -> str:
    return format_table(
        ["layer", "shape", "MACs compacted", "MACs cover", "MACs nonzero", "blocks", "order",
         "ms dense", "ms cover", "chosen"],
        [[layer["name"], "x".join(map(str, layer["shape"])), f"{layer['macs_compacted']:,}",
          f"{layer['macs_cover']:,}", f"{layer['macs_nonzero']:,}", layer["blocks"],
          layer["reorder"], _ms(layer["ms_dense"]), _ms(layer["ms_cover"]),
          f"{layer['chosen']}: {layer['why']}"] for layer in layers])


def _ms(times: dict[str, float]) -> str:
    return " / ".join(f"{v:.3f}" for v in times.values()) or "-"


if __name__ == "__main__":
    main()
