"""Masks for models without data (e.g. CIFAR networks in benchmarks): NNrelief-like ones, and
masks with hidden block structure.

Not NNrelief: a stand-in with the same structure, for measuring size and speed. Per layer
(all but the last), a fraction ``dead_units`` of the units loses every incoming connection
and its bias (and its BatchNorm channel); in the surviving units, whole kernel slices (for
convs) or single weights (for Linear) are kept by magnitude until the layer's density is
``density``; the classifier keeps ``head_density``. The defaults, 10% of the weights with
about a quarter of the filters dead, are in the range NNrelief reaches on VGG / ResNet CIFAR.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def relief_like_masks(model: nn.Module, *, density: float = 0.1, dead_units: float = 0.25,
                      head_density: float = 0.3, seed: int = 0) -> None:
    """Zero weights of ``model`` in place with NNrelief-like structure."""
    generator = torch.Generator().manual_seed(seed)
    modules = list(model.named_modules())
    layers = [(n, m) for n, m in modules if isinstance(m, (nn.Linear, nn.Conv2d))]
    batchnorm_after = _batchnorm_after(modules)
    with torch.no_grad():
        for index, (name, layer) in enumerate(layers):
            last = index == len(layers) - 1
            dead = torch.zeros(layer.weight.shape[0], dtype=torch.bool) if last else \
                torch.rand(layer.weight.shape[0], generator=generator) < dead_units
            _keep_strongest(layer.weight, head_density if last else density, dead)
            if layer.bias is not None:
                layer.bias[dead] = 0
            batchnorm = batchnorm_after.get(name)
            if batchnorm is not None:
                batchnorm.weight[dead] = 0
                batchnorm.bias[dead] = 0


def hidden_group_masks(model: nn.Module, *, groups: int = 8, density: float = 1.0,
                       seed: int = 0) -> None:
    """Zero weights of ``model`` in place so that each layer (but the last) is block-diagonal
    under a permutation nobody is told about: every unit and input channel is drawn into one
    of ``groups`` groups at random, a connection survives only inside its group (and then
    with probability ``density``); a layer's input groups are the groups of the units that
    feed it where the widths match (a chain), else drawn afresh. A layer with fewer than two
    inputs per group (an image's 3 channels) stays dense."""
    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    previous: torch.Tensor | None = None
    with torch.no_grad():
        for layer in layers[:-1]:
            units, inputs = layer.weight.shape[:2]
            unit_groups = torch.randint(0, groups, (units,), generator=generator)
            if inputs < 2 * groups:
                previous = unit_groups
                continue
            input_groups = previous if previous is not None and len(previous) == inputs and \
                isinstance(layer, nn.Conv2d) else \
                torch.randint(0, groups, (inputs,), generator=generator)
            keep = (unit_groups[:, None] == input_groups[None, :]) & \
                (torch.rand(units, inputs, generator=generator) < density)
            layer.weight.mul_(keep.view(units, inputs, *([1] * (layer.weight.dim() - 2))))
            previous = unit_groups


def _keep_strongest(weight: torch.Tensor, density: float, dead: torch.Tensor) -> None:
    """Keep the largest connections (kernel slices by L1 norm) of live units."""
    strength = weight.abs().flatten(2).sum(2) if weight.dim() > 2 else weight.abs()
    strength = strength.clone()
    strength[dead] = -1
    keep = max(1, int(density * strength.numel()))
    threshold = strength.flatten().kthvalue(strength.numel() - keep + 1).values
    mask = (strength >= threshold) & (strength >= 0)
    weight.mul_(mask.view(*mask.shape, *([1] * (weight.dim() - 2))))


def _batchnorm_after(modules: list[tuple[str, nn.Module]]) -> dict[str, nn.BatchNorm2d]:
    """conv name -> the BatchNorm registered right after it (zoo convention)."""
    pairs = {}
    for (name, module), (_, following) in itertools.pairwise(modules):
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            pairs[name] = following
    return pairs
