"""Compaction against Torch-Pruning on the same masks.

Each model gets NNrelief-like masks (relief_export.bench.masks) and random BatchNorm
statistics, so dead units emit nonzero constants (BN shifts, biases) as trained networks do.
Torch-Pruning is given, per Linear / Conv2d, the indices of the units whose incoming weights
are all zero ("dead channels") and removes them with its dependency groups; we run
relief_export.compact on the masked model. Reported: parameters after (all parameters,
BatchNorm included) and max |output error| / max |output| against the masked model on 64
seeded random inputs.

Usage: .venv/bin/python tools/compare_torch_pruning.py   (needs the `bench` extra)
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from relief_export import compact, models
from relief_export.bench.masks import relief_like_masks
from relief_export.table import format_table

NAMES = ["lenet300_100", "lenet5", "vgg16", "resnet20", "resnet56", "resnet18"]


def masked_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = models.build(name).eval()
    relief_like_masks(model, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                live = module.weight != 0
                module.bias.copy_(torch.randn(size, generator=generator) * 0.2 * live)
    return model


def torch_pruning_result(model: nn.Module, example: torch.Tensor) -> nn.Module:
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example,
                                                  verbose=False)
    layers = [m for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    for layer in layers[:-1]:
        dead = torch.nonzero(layer.weight.flatten(1).eq(0).all(1)).flatten().tolist()
        if not dead or len(dead) == layer.weight.shape[0]:
            continue
        function = tp.prune_linear_out_channels if isinstance(layer, nn.Linear) \
            else tp.prune_conv_out_channels
        group = graph.get_pruning_group(layer, function, idxs=dead)
        if graph.check_pruning_group(group):
            group.prune()
    return pruned


def error(reference: nn.Module, candidate: nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        expected, got = reference(inputs), candidate(inputs)
    return float((expected - got).abs().max() / expected.abs().max())


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    rows = []
    for name in NAMES:
        model = masked_model(name)
        shape = models.input_shape(name)
        inputs = torch.rand((64, *shape[1:]), generator=torch.Generator().manual_seed(2))
        ours = compact(model, torch.rand(shape))
        try:
            theirs = torch_pruning_result(model, torch.rand(shape))
            their_params, their_error = f"{count(theirs):,}", f"{error(model, theirs, inputs):.2e}"
        except Exception as failure:  # report, do not hide, a peer that cannot run
            their_params, their_error = "failed", type(failure).__name__
        rows.append([name, f"{count(model):,}", f"{count(ours):,}",
                     f"{error(model, ours, inputs):.2e}", their_params, their_error])
    print(format_table(["model", "params", "ours: params", "ours: error",
                        "Torch-Pruning: params", "Torch-Pruning: error"], rows))


if __name__ == "__main__":
    main()
