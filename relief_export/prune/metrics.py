"""Remaining weights and FLOPs of Linear / Conv2d layers (the quantities NNrelief reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .structure import Layer


@dataclass(frozen=True)
class LayerDensity:
    """One layer: weights (and bias) total / nonzero, multiply-adds dense / remaining."""

    name: str
    weights: int
    nonzero: int
    macs: int
    nonzero_macs: int

    @property
    def density(self) -> float:
        return self.nonzero / self.weights if self.weights else 0.0


def layer_densities(layers: Mapping[str, Layer], positions: Mapping[str, int]
                    ) -> list[LayerDensity]:
    """MACs = weights x output positions (1 for Linear); nonzero MACs use nonzero weights."""
    rows = []
    for name, layer in layers.items():
        weight = layer.weight.detach()
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(0)
        nonzero_weights = int(torch.count_nonzero(weight))
        per_position = positions.get(name, 1)
        rows.append(LayerDensity(name, weight.numel() + bias.numel(),
                                 nonzero_weights + int(torch.count_nonzero(bias)),
                                 weight.numel() * per_position, nonzero_weights * per_position))
    return rows


def summary(rows: list[LayerDensity]) -> dict[str, float | dict[str, float]]:
    """Remaining weight and FLOP fractions, and per-layer densities, as JSON-ready numbers."""
    weights = sum(r.weights for r in rows)
    macs = sum(r.macs for r in rows)
    return {
        "remaining_weights": sum(r.nonzero for r in rows) / weights if weights else 0.0,
        "remaining_flops": sum(r.nonzero_macs for r in rows) / macs if macs else 0.0,
        "nonzero_weights": sum(r.nonzero for r in rows),
        "layer_density": {r.name: r.density for r in rows},
    }
