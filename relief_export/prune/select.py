"""The keep rule and the per-unit bookkeeping of which parameters survive.

Keep rule (per unit, contributors = inputs and the bias): sort scores descending and keep the
smallest prefix whose cumulative score reaches alpha * S_j, S_j the row total. A contributor
is kept iff the scores ranked before it sum to less than alpha * S_j and its own score is
positive (zero scores are never kept). Ties keep the lower index first.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import ReliefError
from .structure import unit_axis


def keep_mask(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Bool mask of the kept contributors for every row of ``scores`` [units, contributors]."""
    check_alpha(alpha, "alpha")
    values = scores.double()
    order = values.argsort(dim=1, descending=True, stable=True)
    ranked = values.gather(1, order)
    running = ranked.cumsum(1)
    before = running - ranked
    threshold = alpha * running[:, -1:]
    kept_ranked = (before < threshold) & (ranked > 0)
    return torch.zeros_like(kept_ranked).scatter_(1, order, kept_ranked)


def check_alpha(alpha: float, name: str) -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise ReliefError(f"{name} must lie in (0, 1], got {alpha!r}")


class MaskPlan:
    """Boolean keep-masks for every prunable tensor, by name, tightened but never loosened.

    Layer weights and biases, the weight / bias of the BatchNorm right after a layer, and
    per-channel shortcut gates (buffers).
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module],
                 batchnorm_of: Mapping[str, str], gates: set[str]) -> None:
        self.model = model
        self.layers = layers
        self.batchnorm_of = batchnorm_of
        self.masks: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        owners = {**layers, **{bn: modules[bn] for bn in batchnorm_of.values()}}
        for owner_name, module in owners.items():
            for param in ("weight", "bias"):
                if getattr(module, param, None) is not None:
                    self.masks[f"{owner_name}.{param}"] = _current_mask(module, param)
        for gate in gates:
            self.masks[gate] = _resolve(model, gate).detach().ne(0)

    def restrict(self, name: str, keep: torch.Tensor) -> None:
        self.masks[name] &= keep.to(torch.bool)

    def restrict_layer(self, layer: str, keep: torch.Tensor) -> None:
        """Apply a keep-rule result [out, contributors + 1] (bias last) to a layer."""
        weight = self.masks[f"{layer}.weight"]
        inputs = keep[:, :-1].reshape(keep.shape[0], keep.shape[1] - 1,
                                      *([1] * (weight.dim() - 2)))
        if unit_axis(self.layers[layer]) == 1:
            inputs = inputs.transpose(0, 1)
        self.restrict(f"{layer}.weight", inputs.expand_as(weight))
        if f"{layer}.bias" in self.masks:
            self.restrict(f"{layer}.bias", keep[:, -1])

    def prune_unit(self, layer: str, unit: int) -> bool:
        """Drop all incoming weights, the bias and the BN channel of one unit; True if new."""
        names = [f"{layer}.weight", f"{layer}.bias"]
        if layer in self.batchnorm_of:
            names += [f"{self.batchnorm_of[layer]}.weight", f"{self.batchnorm_of[layer]}.bias"]
        changed = False
        for name in names:
            axis = unit_axis(self.layers[layer]) if name == f"{layer}.weight" else 0
            if name in self.masks:
                row = self.masks[name].select(axis, unit)
                changed |= bool(row.any())
                row.fill_(False)
        return changed

    def close_gate(self, gate: str, channel: int) -> None:
        self.masks[gate][channel] = False

    def apply(self) -> None:
        """Write the masks into the model: prune masks on parameters, zeros in gate buffers."""
        from ..graph.masks import apply_masks

        parameters = {n: m for n, m in self.masks.items() if not _is_buffer(self.model, n)}
        apply_masks(self.model, parameters)
        with torch.no_grad():
            for name, mask in self.masks.items():
                if name not in parameters:
                    _resolve(self.model, name).mul_(mask.to(torch.float32))


def _current_mask(module: nn.Module, param: str) -> torch.Tensor:
    existing = getattr(module, f"{param}_mask", None)
    if existing is not None:
        return existing.detach().bool().clone()
    return torch.ones_like(getattr(module, param), dtype=torch.bool)


def _resolve(model: nn.Module, name: str) -> torch.Tensor:
    owner, _, attribute = name.rpartition(".")
    value = getattr(model.get_submodule(owner) if owner else model, attribute)
    assert isinstance(value, torch.Tensor)
    return value


def _is_buffer(model: nn.Module, name: str) -> bool:
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    return attribute in module._buffers
