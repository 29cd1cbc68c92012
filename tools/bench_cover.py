"""Which cover search wins on which mask: the multiply-adds (fraction of O x I) of each
search's cover, and of the unrefined spectral labels, on masks of known structure.

Masks (512 x 512, seeded): k hidden groups under random orders (a connection only inside
its group), the same with 0.2% stray connections, the same with half the in-group
connections dropped, and uniform random masks at 5% and 15% (no structure to find).

Usage: .venv/bin/python tools/bench_cover.py [--size 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from relief_export.onnx.sparse.cover import candidate_covers
from relief_export.table import format_table


def masks(size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def hidden(groups: int, stray: float, keep: float) -> np.ndarray:
        units, inputs = rng.integers(0, groups, size), rng.integers(0, groups, size)
        mask = (units[:, None] == inputs[None, :]) & (rng.random((size, size)) < keep)
        return mask | (rng.random((size, size)) < stray)

    return {"8 hidden groups": hidden(8, 0.0, 1.0), "4 hidden groups": hidden(4, 0.0, 1.0),
            "8 groups + 0.2% strays": hidden(8, 0.002, 1.0),
            "8 groups, half kept": hidden(8, 0.0, 0.5),
            "random 5%": rng.random((size, size)) < 0.05,
            "random 15%": rng.random((size, size)) < 0.15}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, mask in masks(args.size, rng).items():
        start = time.perf_counter()
        found = candidate_covers(mask)
        seconds = time.perf_counter() - start
        best = min(found, key=lambda k: (found[k].cost, len(found[k].blocks)))
        rows.append([name, f"{mask.mean():.3f}",
                     *[f"{found[k].fraction:.3f} ({len(found[k].blocks)})" if k in found
                       else "-" for k in ("components", "spectral k=4", "spectral k=8",
                                          "spectral k=16")],
                     best, f"{seconds:.2f}"])
    print(format_table(["mask", "density", "components", "spectral k=4", "spectral k=8",
                        "spectral k=16", "chosen", "seconds"], rows))


if __name__ == "__main__":
    main()
