"""NNrelief-like masks for models without data (e.g. CIFAR networks in benchmarks).

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
