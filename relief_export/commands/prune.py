"""``relief-export prune``: NNrelief on a dense checkpoint, writing a masked checkpoint."""

from __future__ import annotations

import argparse

import torch

from .. import data, models
from ..checkpoint import read_model, save_checkpoint
from ..errors import ReliefError
from ..files import check_output
from ..masks import effective_state_dict
from ..prune.relief import ReliefConfig, relief
from ..table import format_table
from ._options import fit_config
from .inspect import print_notes


def prune_command(args: argparse.Namespace) -> int:
    out = check_output(args.out, inputs=[args.model])
    loaded = read_model(args.model, trust=args.trust_pickle, allow_factory=args.allow_factory)
    print_notes(loaded.notes)
    if loaded.arch is None:
        raise ReliefError(f"{args.model}: prune needs a relief_export checkpoint (it records "
                          "the architecture to save the result with)")
    config = ReliefConfig(iterations=args.iterations, alpha_fc=args.alpha_fc,
                          alpha_conv=args.alpha_conv, calib_samples=args.calib_samples,
                          conv_score=args.conv_score, finetune=fit_config(args),
                          seed=args.seed, target_remaining=args.target_remaining)
    full = data.load(args.data, "train")
    test = data.load(args.data, "test")
    train, val = data.train_val_split(full, args.val_fraction, args.seed)
    rewind_to = _initial_state(loaded.arch, loaded.metrics) if args.rewind else None
    result = relief(loaded.model, train, config, val_data=val, test_data=test,
                    rewind_to=rewind_to)
    final = result.history[-1]
    metrics = {**loaded.metrics, "test_accuracy": final["test_accuracy"],
               "val_accuracy": final["val_accuracy"],
               "dense_test_accuracy": result.history[0]["test_accuracy"],
               "remaining_weights": final["remaining_weights"],
               "remaining_flops": final["remaining_flops"],
               "prune_config": {k: v for k, v in vars(config).items() if k != "finetune"}}
    save_checkpoint(out, result.model, arch=loaded.arch, inputs=(args.model,),
                    input_shape=loaded.input_shape or [1, *full.sample_shape], data=args.data,
                    metrics=metrics, history=result.history)
    print(history_table(result.history))
    print(f"wrote {out}")
    return 0


def history_table(history: list[dict]) -> str:
    """iteration, remaining weights / FLOPs, validation and test accuracy, seconds."""
    rows = [[h["iteration"], h["remaining_weights"], h["remaining_flops"],
             h.get("val_accuracy"), h.get("test_accuracy"), h["seconds"]] for h in history]
    return format_table(["iteration", "weights left", "FLOPs left", "val acc", "test acc",
                         "seconds"], rows)


def _initial_state(arch: dict, metrics: dict) -> dict[str, torch.Tensor]:
    """The weights the dense model started from: rebuilt from the seed ``train`` recorded."""
    if "name" not in arch or "init_seed" not in metrics:
        raise ReliefError("--rewind needs a checkpoint written by `relief-export train` "
                          "(it records the initialisation seed)")
    torch.manual_seed(int(metrics["init_seed"]))
    return effective_state_dict(models.build(arch["name"], **arch.get("kwargs", {})))
