"""int8 on top of compaction: dense fp32, ours fp32, dense int8 and ours int8, 1 thread.

Models: LeNet-300-100 and LeNet-5 pruned by NNrelief on the packaged MNIST digits (trained
here, or read from --checkpoints DIR holding lenet300_100.pt and lenet5.pt), VGG-16 and
ResNet-56 with the NNrelief-like masks of relief_export.bench.masks (no data set offline: their
weights are random, calibration is synthetic and their agreement gate is lifted).

  dense fp32  the masked model exported densely by torch.onnx (what a user has without us)
  ours fp32   relief-export MODEL --out X.onnx
  dense int8  dense fp32 quantized by onnxruntime.quantization with our recipe (static QDQ,
              per-channel symmetric int8 weights, uint8 activations, MinMax)
  ours int8   relief-export MODEL --out X.onnx --int8 (layers and calibration by measurement)

Latency: medians of interleaved runs (A B C D A B C D ...) at batch 1 and 64, repeated --runs
times with fresh sessions; speed-ups against dense fp32. MAC limit = dense MACs / our MACs.

Targets: VGG-16 ours int8 >= 8x dense fp32 at batch 64; ResNet-56 ours int8 / dense int8 >=
0.8 x MAC limit; LeNets ours int8 test accuracy within 0.5 points of ours fp32; LeNet-300-100
(<= 5% of weights) <= 2.0 bytes per nonzero beyond 8 KiB.

Usage: .venv/bin/python tools/bench_int8.py [--checkpoints DIR] [--runs 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from relief_export import models
from relief_export.bench.graph_stats import graph_stats
from relief_export.int8 import int8_samples
from relief_export.onnx.quantize import quantize
from relief_export.pipeline import export_onnx
from relief_export.table import format_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_suite import REPEATS, latency, suite_checkpoints

KINDS = ("dense fp32", "ours fp32", "dense int8", "ours int8")


def build(arch: str, checkpoint: Path, folder: Path) -> tuple[dict[str, Path], dict]:
    """The four files of one model and what our exports reported."""
    files = {kind: folder / f"{arch}-{kind.replace(' ', '-')}.onnx" for kind in KINDS}
    has_data = arch.startswith("lenet")
    fp32 = export_onnx(checkpoint, files["ours fp32"], dense_out=files["dense fp32"])
    options = {} if has_data else {"calib_synthetic": True, "accept_accuracy_drop": 100.0}
    int8 = export_onnx(checkpoint, files["ours int8"], int8=True, **options,
                       progress=lambda line: print(f"  {arch}: {line}", file=sys.stderr))
    shape = models.input_shape(arch)
    samples = int8_samples("mnist5k" if has_data else None, shape, 256, not has_data)
    onnx.save(quantize(onnx.load(files["dense fp32"]), samples.calibration, "minmax"),
              files["dense int8"])
    return files, {"fp32": fp32, "int8": int8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()[0]:.2f}")
    records, rows, checks = [], [], []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        sources = suite_checkpoints(folder, args.checkpoints)
        for arch, checkpoint in sources.items():
            files, reports = build(arch, checkpoint, folder)
            stats = {kind: graph_stats(path) for kind, path in files.items()}
            timing = latency(files, stats["ours fp32"].input_shape, args.runs)
            limit = stats["dense fp32"].macs / stats["ours fp32"].macs
            sizes = {kind: path.stat().st_size for kind, path in files.items()}
            speed = {b: {k: float(np.median(timing[b]["dense fp32"]) / np.median(timing[b][k]))
                         for k in KINDS} for b in REPEATS}
            int8 = reports["int8"].int8 or {}
            record = {"model": arch, "nonzero": reports["fp32"].params_nonzero,
                      "parameters": reports["fp32"].params_dense, "bytes": sizes,
                      "mac_limit": limit, "timing_ms": timing, "speedup": speed,
                      "int8_choice": int8.get("chosen"), "int8_check": int8.get("check"),
                      "calibration": int8.get("method")}
            records.append(record)
            rows += [[arch, kind, f"{sizes[kind]:,}",
                      *(f"{np.median(timing[b][kind]):.3f}" for b in REPEATS),
                      *(f"{speed[b][kind]:.2f}x" for b in REPEATS),
                      f"{limit:.2f}x" if kind == "ours fp32" else ""] for kind in KINDS]
            checks.append(_target(arch, record, reports))
    print(format_table(["model", "file", "bytes", "b1 ms", "b64 ms", "b1 speed-up",
                        "b64 speed-up", "MAC limit"], rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    for line in checks:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, default=str))


def _target(arch: str, record: dict, reports: dict) -> str:
    speed, limit = record["speedup"][64], record["mac_limit"]
    if arch == "vgg16":
        return f"vgg16: ours int8 {speed['ours int8']:.2f}x dense fp32 at batch 64 (target 8x)"
    if arch == "resnet56":
        ratio = speed["ours int8"] / speed["dense int8"]
        return (f"resnet56: ours int8 / dense int8 = {ratio:.2f}x, 0.8 x MAC limit = "
                f"{0.8 * limit:.2f}x (target: the first >= the second)")
    check = record["int8_check"] or {}
    text = (f"{arch}: test accuracy ours fp32 {100 * check.get('fp32_accuracy', 0):.2f}% -> "
            f"ours int8 {100 * check.get('int8_accuracy', 0):.2f}% "
            f"(file: {record['int8_choice']}; target: within 0.5 points)")
    if arch == "lenet300_100":
        share = record["nonzero"] / record["parameters"]
        per = (record["bytes"]["ours int8"] - 8192) / record["nonzero"]
        text += (f"; {100 * share:.2f}% of weights, {per:.3f} bytes per nonzero beyond 8 KiB "
                 "(target <= 2.0)")
    return text


if __name__ == "__main__":
    main()
