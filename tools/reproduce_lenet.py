"""Reproduce NNrelief's LeNet-300-100 experiment: dense training, then prune + fine-tune
iterations with alpha_fc = 0.95 until at most 5% of the weights remain.

Target: test accuracy within 1.5 points of the dense model at <= 5% remaining weights.

Usage:
  .venv/bin/python tools/reproduce_lenet.py                       # the packaged mnist5k digits
  .venv/bin/python tools/reproduce_lenet.py --data mnist:DIR      # full MNIST from IDX files
Writes OUT/history.json, OUT/curve.png and OUT/table.md (default OUT: docs/lenet300_100).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from relief_export import data, models
from relief_export.prune import FitConfig, ReliefConfig, evaluate, fit, relief


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--dense-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--alpha-fc", type=float, default=0.95)
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--rewind", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/lenet300_100"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    full, test = data.load(args.data, "train"), data.load(args.data, "test")
    train, val = data.train_val_split(full, 0.1, args.seed)
    torch.manual_seed(args.seed)
    model = models.build("lenet300_100")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    start = time.perf_counter()
    fit(model, train, FitConfig(epochs=args.dense_epochs, milestones=(args.dense_epochs // 2,),
                                seed=args.seed), val, desc="dense")
    dense_accuracy = evaluate(model, test)
    print(f"dense: test accuracy {dense_accuracy:.4f} ({time.perf_counter() - start:.0f} s)")

    finetune = FitConfig(epochs=args.finetune_epochs,
                         milestones=(args.finetune_epochs // 2,), seed=args.seed)
    config = ReliefConfig(iterations=args.iterations, alpha_fc=args.alpha_fc,
                          finetune=finetune, seed=args.seed, target_remaining=args.target)
    result = relief(model, train, config, val_data=val, test_data=test,
                    rewind_to=initial if args.rewind else None)
    history = result.history
    final = history[-1]
    drop = (dense_accuracy - final["test_accuracy"]) * 100
    lines = ["| iteration | weights left | test accuracy | val accuracy |", "|---|---|---|---|"]
    lines += [f"| {h['iteration']} | {100 * h['remaining_weights']:.2f}% | "
              f"{100 * h['test_accuracy']:.2f}% | {100 * h['val_accuracy']:.2f}% |"
              for h in history]
    table = "\n".join(lines)
    print(table)
    verdict = "PASS" if final["remaining_weights"] <= args.target and drop <= 1.5 else "FAIL"
    print(f"{verdict}: {100 * final['remaining_weights']:.2f}% of the weights left, test "
          f"accuracy {100 * final['test_accuracy']:.2f}% vs dense {100 * dense_accuracy:.2f}% "
          f"({-drop:+.2f} points vs dense), {time.perf_counter() - start:.0f} s in all")
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "history.json").write_text(json.dumps(
        {"data": args.data, "dense_test_accuracy": dense_accuracy, "history": history}, indent=1))
    plot_curve(history, dense_accuracy, args.out / "curve.png", args.data)


def plot_curve(history: list[dict], dense: float, path: Path, data_spec: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    remaining = [100 * h["remaining_weights"] for h in history]
    axis.plot(remaining, [100 * h["test_accuracy"] for h in history], "o-", label="NNrelief")
    axis.axhline(100 * dense, color="gray", linestyle="--", label="dense")
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel("weights remaining (%)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"LeNet-300-100 on {data_spec}, alpha_fc = 0.95")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
