"""``relief-export inspect MODEL``: per layer, shape, density, dead units, what compaction would
remove and the weight format export would choose; nothing is written."""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from ..checkpoint import read_model
from ..compile import compact_with_report
from ..compile.formats import FORMATS, smallest
from ..compile.graph import unmasked_copy
from ..errors import ReliefError
from ..table import format_table


def inspect_command(args: argparse.Namespace) -> int:
    loaded = read_model(args.model, trust=args.trust_pickle, allow_factory=args.allow_factory)
    shape = args.input_shape or loaded.input_shape
    if not shape:
        raise ReliefError(f"{args.model}: the file records no input shape; pass --input-shape")
    plain = unmasked_copy(loaded.model)
    rows = [_layer_row(name, module) for name, module in plain.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d))]
    print(f"{loaded.source} ({loaded.kind}), input shape {shape}")
    if loaded.history:
        final = loaded.history[-1]
        print(f"NNrelief iterations: {len(loaded.history) - 1}, weights left "
              f"{100 * final['remaining_weights']:.2f}%, test accuracy "
              f"{100 * final.get('test_accuracy', float('nan')):.2f}%")
    print(format_table(["layer", "shape", "density", "dead units", "unread inputs",
                        "export format", "bytes (fp32)"], rows))
    example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    _, report = compact_with_report(loaded.model, example)
    print("\nexact compaction would give:")
    print(report)
    return 0


def _layer_row(name: str, module: nn.Linear | nn.Conv2d) -> list:
    weight = module.weight.detach()
    rows = weight.flatten(1)
    dead = int((rows == 0).all(1).sum())
    unread = int((weight.flatten(2).eq(0).all(2) if weight.dim() > 2 else weight.eq(0))
                 .all(0).sum())
    encoded = smallest(weight.numpy().astype(np.float32), FORMATS)
    return [name, "x".join(map(str, weight.shape)),
            f"{float((weight != 0).float().mean()):.4f}", dead, unread, encoded.format,
            f"{encoded.nbytes:,}"]
