"""ONNX export targets: file size, run time of the result, speed of the tool.

1. Size: LeNet-300-100 pruned by NNrelief to <= 5% of its weights (trained and pruned here on
   mnist5k, or --lenet CHECKPOINT): file bytes <= 6 x nonzero weights + 8 KiB with fp32 values
   and <= 4 x nonzero + 8 KiB with --fp16-weights. The same figures for VGG-16 and ResNet-56
   with NNrelief-like masks (relief_export.bench.masks). Compared with what a user would try
   instead: the masked model exported densely by torch.onnx, and the same file with its
   weights stored as ONNX sparse_initializer (COO).
2. Run time: onnxruntime latency of the encoded model vs the same compacted model with dense
   weights, interleaved in one run (target ratio <= 1.05: decoders fold at load), batch 1
   and 64, 1 thread; session creation times.
3. Tool speed: export of resnet56 including verification (target < 20 s).

Usage: .venv/bin/python tools/bench_export.py [--lenet CHECKPOINT] [--repeats 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import torch
from onnx import helper, numpy_helper

from relief_export import compact, data, models, save_checkpoint
from relief_export.bench.latency import create_session, time_interleaved
from relief_export.bench.masks import relief_like_masks
from relief_export.onnx.emit import to_onnx
from relief_export.onnx.formats import MODES
from relief_export.onnx.passes import EncodeWeights
from relief_export.pipeline import export_onnx
from relief_export.prune import FitConfig, ReliefConfig, fit, relief
from relief_export.table import format_table

KIB = 1024


def pruned_lenet(folder: Path) -> Path:
    """Dense training (30 epochs) then NNrelief (alpha_fc 0.95) to <= 5% of the weights."""
    full, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    train, val = data.train_val_split(full, 0.1, 0)
    torch.manual_seed(0)
    model = models.build("lenet300_100")
    fit(model, train, FitConfig(epochs=30, milestones=(15,)), val, progress=False)
    config = ReliefConfig(iterations=20, alpha_fc=0.95, target_remaining=0.05,
                          finetune=FitConfig(epochs=20, milestones=(10,)))
    result = relief(model, train, config, val_data=val, test_data=test, progress=False)
    print(f"LeNet-300-100: {100 * result.history[-1]['remaining_weights']:.2f}% of the weights "
          f"left, test accuracy {100 * result.history[-1]['test_accuracy']:.2f}%")
    return save_checkpoint(folder / "lenet.pt", model, arch={"name": "lenet300_100",
                                                             "kwargs": {}},
                           input_shape=[1, 1, 28, 28], data="mnist5k",
                           history=result.history)


def masked_checkpoint(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = models.build(name).eval()
    relief_like_masks(model, seed=0)
    return save_checkpoint(folder / f"{name}.pt", model, arch={"name": name, "kwargs": {}},
                           input_shape=models.input_shape(name))


def sparse_initializer_bytes(dense_path: Path) -> int:
    """The dense export with every weight of >= 64 entries stored as a COO sparse_initializer."""
    model = onnx.load(dense_path)
    kept, sparse = [], []
    for initializer in model.graph.initializer:
        array = numpy_helper.to_array(initializer)
        if array.size < 64 or array.dtype != np.float32:
            kept.append(initializer)
            continue
        flat = array.reshape(-1)
        positions = np.flatnonzero(flat).astype(np.int64)
        values = numpy_helper.from_array(flat[positions], initializer.name)
        indices = numpy_helper.from_array(positions, initializer.name + "_indices")
        sparse.append(helper.make_sparse_tensor(values, indices, list(array.shape)))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.sparse_initializer.extend(sparse)
    return len(model.SerializeToString())


def size_rows(checkpoints: dict[str, Path], folder: Path) -> list[list]:
    rows = []
    for name, path in checkpoints.items():
        fp32 = export_onnx(path, folder / f"{name}.onnx", dense_out=folder / f"{name}-dense.onnx")
        fp16 = export_onnx(path, folder / f"{name}-fp16.onnx", fp16_weights=True)
        nonzero = fp32.params_nonzero
        coo = sparse_initializer_bytes(folder / f"{name}-dense.onnx")
        rows.append([name, f"{nonzero:,}", f"{fp32.dense_file_bytes:,}", f"{coo:,}",
                     f"{fp32.file_bytes:,}", f"{fp32.file_bytes / nonzero:.2f}",
                     f"{(fp32.file_bytes - 8 * KIB) / nonzero:.2f}",
                     f"{fp16.file_bytes:,}", f"{fp16.file_bytes / nonzero:.2f}",
                     f"{(fp16.file_bytes - 8 * KIB) / nonzero:.2f}",
                     f"{fp16.fp16_error_vs_fp32:.1e}"])
    return rows


def latency_rows(names: list[str], repeats: int) -> list[list]:
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = models.build(name).eval()
        relief_like_masks(model, seed=0)
        example = torch.rand(models.input_shape(name))
        compacted = compact(model, example, fold_batchnorm=True)
        dense = ir.to_proto(to_onnx(compacted, example))
        encoded_ir = ir.from_proto(dense)
        EncodeWeights(MODES["auto"])(encoded_ir)
        encoded = ir.to_proto(encoded_ir)
        for batch in (1, 64):
            sessions, created = {}, {}
            for label, proto in (("dense weights", dense), ("encoded", encoded)):
                sessions[label], created[label] = create_session(proto.SerializeToString(), 1)
            feed = np.random.default_rng(0).random((batch, *example.shape[1:]), np.float32)
            times = time_interleaved(sessions, feed, warmup=3, repeats=repeats)
            medians = {k: float(np.median(v)) for k, v in times.items()}
            rows.append([name, batch, f"{1e3 * medians['dense weights']:.3f}",
                         f"{1e3 * medians['encoded']:.3f}",
                         f"{medians['encoded'] / medians['dense weights']:.3f}",
                         f"{1e3 * created['dense weights']:.0f}",
                         f"{1e3 * created['encoded']:.0f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lenet", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        lenet = args.lenet or pruned_lenet(folder)
        checkpoints = {"lenet300_100": lenet, "vgg16": masked_checkpoint("vgg16", folder),
                       "resnet56": masked_checkpoint("resnet56", folder)}
        print(format_table(
            ["model", "nonzero", "torch.onnx dense", "sparse_initializer", "ours fp32",
             "B/nonzero", "(B-8KiB)/nz", "ours fp16", "B/nonzero", "(B-8KiB)/nz",
             "fp16 error"], size_rows(checkpoints, folder)))
        print("targets for LeNet-300-100: (B-8KiB)/nz <= 6 with fp32, <= 4 with fp16\n")
        print(format_table(["model", "batch", "dense weights ms", "encoded ms", "ratio",
                            "session ms (dense)", "session ms (encoded)"],
                           latency_rows(["lenet300_100", "resnet56"], args.repeats)))
        print("target: ratio <= 1.05 (1 thread, medians of interleaved runs)\n")
        start = time.perf_counter()
        export_onnx(checkpoints["resnet56"], folder / "r56.onnx")
        print(f"export of resnet56 including verification: {time.perf_counter() - start:.1f} s "
              "(target < 20 s)")


if __name__ == "__main__":
    main()
