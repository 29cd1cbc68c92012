"""Compaction speed: resnet56 (target < 5 s) and resnet110 (target < 10 s) on this machine,
with NNrelief-like masks (relief_export.bench.masks), verification included.

Usage: .venv/bin/python tools/bench_compact.py
"""

from __future__ import annotations

import time

import torch

from relief_export import compact_with_report, models
from relief_export.bench.masks import relief_like_masks


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, target in (("resnet20", None), ("resnet56", 5.0), ("resnet110", 10.0),
                         ("vgg16", None)):
        torch.manual_seed(0)
        model = models.build(name).eval()
        relief_like_masks(model, seed=0)
        example = torch.rand(models.input_shape(name))
        start = time.perf_counter()
        _, report = compact_with_report(model, example)
        seconds = time.perf_counter() - start
        goal = f" (target < {target:.0f} s)" if target else ""
        print(f"{name}: {seconds:.2f} s{goal}; layer parameters {report.params_before:,} -> "
              f"{report.params_after:,}; MACs {report.macs_before:,} -> {report.macs_after:,}; "
              f"max relative error {report.max_relative_error:.1e}")


if __name__ == "__main__":
    main()
