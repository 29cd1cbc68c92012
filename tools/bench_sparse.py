"""Sparse compute: dense fp32 vs compaction alone vs compaction + sparse compute, 1 thread.

Models (random weights, no data set needed): VGG-16 and ResNet-56 with
- hidden groups: each layer's units and channels drawn into 8 groups, a connection kept only
  inside its group, under random channel orders (relief_export.bench.masks.hidden_group_masks);
- NNrelief-like masks as they are (relief_export.bench.masks.relief_like_masks);
- with --masks "blocked NNrelief-like": 4 hidden groups, then NNrelief-like masks inside
  them (the structure prune --blocks 4 leaves).

  dense      the masked model exported densely by torch.onnx
  off        relief-export MODEL --out X.onnx --sparse-compute off (compaction alone)
  auto       relief-export MODEL --out X.onnx --sparse-compute auto
  off int8   ... --sparse-compute off --int8 (with --int8; synthetic calibration, random
  auto int8  ... --sparse-compute auto --int8  weights: the agreement gate is lifted)

Latency: medians of interleaved runs (dense off auto dense off auto ...) at batch 1 and 64,
repeated --runs times with fresh sessions; speed-ups against dense. Where auto kept no
cover, its graph is off's: "auto vs off" then says "(no cover)", and its distance from 1.00x
is the timing noise of this machine. Also printed: export
seconds of auto (with tuning), and with --layers, per layer of auto what the cover gained and
what was chosen.

Targets (issue "Sparse compute"): VGG-16 hidden groups auto >= 3.0x dense at batch 64 and
>= 2.5x at batch 1; NNrelief-like masks auto / off >= 0.97 at both batch sizes.

With --families: instead, every model family of relief_export.bench.families (hand-written
ones and, where transformers is installed, Hugging Face ones) under its "l1 90%" masks, dense
vs off vs auto at batch 1 and 64 (token ids for BERT): the target there is auto / off >= 0.97.

Usage: .venv/bin/python tools/bench_sparse.py [--runs 3] [--models vgg16,resnet56|all] [--int8]
       [--layers]
       [--masks "hidden groups,NNrelief-like"] [--json F]
       .venv/bin/python tools/bench_sparse.py --families [--runs 3]
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
import onnx
import onnxruntime
import torch

from relief_export import models
from relief_export.bench.families import FAMILIES, available
from relief_export.bench.families import masked as family_masked
from relief_export.bench.masks import hidden_group_masks, relief_like_masks
from relief_export.onnx.sparse.timing import interleaved_ms
from relief_export.pipeline import export_onnx
from relief_export.runtime.seeded import random_like
from relief_export.table import format_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_suite import latency


def _blocked_relief_like(model: torch.nn.Module) -> None:
    """What prune --blocks 4 leaves, without data: 4 hidden groups, then NNrelief-like masks
    (10% of the weights, a quarter of the units dead) inside them."""
    hidden_group_masks(model, groups=4, seed=0)
    relief_like_masks(model, seed=0)


MASKS = {"hidden groups": lambda m: hidden_group_masks(m, groups=8, seed=0),
         "NNrelief-like": lambda m: relief_like_masks(m, seed=0),
         "blocked NNrelief-like": _blocked_relief_like}


def build(arch: str, masks: str, folder: Path, int8: bool) -> tuple[dict[str, Path], dict]:
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
    seconds = time.perf_counter() - start
    int8_layers = []
    if int8:
        quantized = {"int8": True, "calib_synthetic": True, "accept_accuracy_drop": 100.0}
        for mode in ("off", "auto"):
            files[f"{mode} int8"] = Path(f"{stem}-{mode}-int8.onnx")
            report = export_onnx(model, files[f"{mode} int8"], input_shape=shape,
                                 sparse_compute=mode, **quantized)
            int8_layers = report.sparse_compute or int8_layers
    return files, {"seconds": seconds, "layers": auto.sparse_compute,
                   "whole_model_ms": auto.sparse_whole_model_ms, "int8 layers": int8_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="vgg16,resnet56")
    parser.add_argument("--masks", default="hidden groups,NNrelief-like")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--layers", action="store_true",
                        help="also print, per model, what sparse compute saw in each layer")
    parser.add_argument("--families", action="store_true",
                        help="time every model family under l1 90%% masks instead")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"onnxruntime {onnxruntime.__version__}, load {os.getloadavg()[0]:.2f}")
    if args.families:
        families(args.runs)
        return
    rows, records = [], []
    with tempfile.TemporaryDirectory() as temp:
        for arch in models.names() if args.models == "all" else args.models.split(","):
            for masks in args.masks.split(","):
                files, auto = build(arch, masks, Path(temp), args.int8)
                times = medians(latency(files, tuple(models.input_shape(arch)[1:]), args.runs))
                chosen = [layer for layer in auto["layers"] if layer["chosen"] == "cover"]
                for batch, ms in times.items():
                    int8 = [f"{ms['dense'] / ms['off int8']:.2f}x",
                            f"{ms['dense'] / ms['auto int8']:.2f}x"] if args.int8 else []
                    rows.append([arch, masks, batch, f"{ms['dense']:.2f}", f"{ms['off']:.2f}",
                                 f"{ms['auto']:.2f}", f"{ms['dense'] / ms['off']:.2f}x",
                                 f"{ms['dense'] / ms['auto']:.2f}x",
                                 versus(ms, not chosen), *int8])
                records.append({"model": arch, "masks": masks, "ms": times,
                                "export_seconds": auto["seconds"], "layers": auto["layers"],
                                "whole_model_ms": auto["whole_model_ms"]})
                print(f"{arch} / {masks}: sparse compute chose blocks for {len(chosen)} of "
                      f"{len(auto['layers'])} layers; export with tuning "
                      f"{auto['seconds']:.1f} s")
                if args.layers:
                    print(f"{arch} / {masks}, per layer (--sparse-compute auto):")
                    print(layer_table(auto["layers"]))
                if args.layers and auto["int8 layers"]:
                    print(f"{arch} / {masks}, per layer (--sparse-compute auto --int8; ms of "
                          "each candidate timed quantized):")
                    print(candidate_table(auto["int8 layers"]))
    int8_columns = ["off int8 vs dense", "auto int8 vs dense"] if args.int8 else []
    print(format_table(["model", "masks", "batch", "dense ms", "off ms", "auto ms",
                        "off vs dense", "auto vs dense", "auto vs off", *int8_columns], rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


FAMILY_ROUNDS = {1: 100, 64: 20}


def families(runs: int) -> None:
    """Every available family under l1 90% masks: dense, off and auto timed interleaved."""
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        for name, family in FAMILIES.items():
            if not available(family):
                print(f"{name}: skipped (needs {family.needs})")
                continue
            model, inputs = family_masked(name, "l1 90%")
            files = {kind: Path(temp) / f"{kind}.onnx" for kind in ("dense", "off", "auto")}
            export_onnx(model, files["off"], example_inputs=inputs, dense_out=files["dense"])
            auto = export_onnx(model, files["auto"], example_inputs=inputs,
                               sparse_compute="auto")
            chosen = sum(layer["chosen"] == "cover" for layer in auto.sparse_compute)
            print(f"{name}: sparse compute chose blocks for {chosen} of "
                  f"{len(auto.sparse_compute)} layers")
            for batch, rounds in FAMILY_ROUNDS.items():
                ms = _family_ms(files, inputs, batch, rounds, runs)
                rows.append([name, batch, f"{ms['dense']:.3f}", f"{ms['off']:.3f}",
                             f"{ms['auto']:.3f}", f"{ms['dense'] / ms['off']:.2f}x",
                             f"{ms['dense'] / ms['auto']:.2f}x",
                             versus(ms, not chosen)])
    print(format_table(["family", "batch", "dense ms", "off ms", "auto ms", "off vs dense",
                        "auto vs dense", "auto vs off"], rows))
    print(f"load after: {os.getloadavg()[0]:.2f}")


def _family_ms(files: dict[str, Path], inputs: tuple[torch.Tensor, ...], batch: int,
               rounds: int, runs: int) -> dict[str, float]:
    """The median over ``runs`` of each file's median ms (interleaved, 1 thread)."""
    generator = torch.Generator().manual_seed(0)
    arrays = [random_like(x, batch, generator, "normal").numpy() for x in inputs]
    feeds = []
    for path in files.values():
        graph = onnx.load(path).graph
        names = [v.name for v in graph.input if v.name not in {i.name for i in graph.initializer}]
        feeds.append(dict(zip(names, arrays, strict=True)))
    blobs = [path.read_bytes() for path in files.values()]
    per_run = [interleaved_ms(blobs, feeds, 1, rounds) for _ in range(runs)]
    return {kind: float(np.median([run[i] for run in per_run])) for i, kind in enumerate(files)}


def layer_table(layers: list[dict]) -> str:
    return format_table(
        ["layer", "shape", "MACs compacted", "MACs cover", "MACs nonzero", "blocks", "order",
         "ms dense", "ms cover", "chosen"],
        [[layer["name"], "x".join(map(str, layer["shape"])), f"{layer['macs_compacted']:,}",
          f"{layer['macs_cover']:,}", f"{layer['macs_nonzero']:,}", layer["blocks"],
          layer["reorder"], _ms(layer["ms_dense"]), _ms(layer["ms_cover"]),
          f"{layer['chosen']}: {layer['why']}"] for layer in layers])


def versus(ms: dict[str, float], none_kept: bool) -> str:
    """auto vs off; where auto kept no cover, its graph is off's and the ratio is timing
    noise: it says so."""
    ratio = f"{ms['off'] / ms['auto']:.2f}x"
    return f"{ratio} (no cover)" if none_kept else ratio


def candidate_table(layers: list[dict]) -> str:
    """Per timed layer: dense and every cover's ms per setting, and the choice."""
    rows = [[layer["name"], "x".join(map(str, layer["shape"])), _ms(layer["ms_dense"]),
             "; ".join(f"{name}: {_ms(ms)}" for name, ms in layer["ms_candidates"].items()),
             layer["chosen"] + (f" ({layer['blocks']} blocks)" if layer["chosen"] == "cover"
                                else "")]
            for layer in layers if layer["ms_dense"]]
    return format_table(["layer", "shape", "ms dense", "ms of each cover", "chosen"], rows)


def _ms(times: dict[str, float]) -> str:
    return " / ".join(f"{v:.3f}" for v in times.values()) or "-"


def medians(runs: dict[int, dict[str, list[float]]]) -> dict[int, dict[str, float]]:
    """The median over runs of each file's per-run median (ms)."""
    return {batch: {name: float(np.median(v)) for name, v in ms.items()}
            for batch, ms in runs.items()}


if __name__ == "__main__":
    main()
