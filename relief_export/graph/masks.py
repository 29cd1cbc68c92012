"""Masks as torch.nn.utils.prune keeps them (``weight_orig * weight_mask``), and back."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def fold_prune_keys(state: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A state dict with ``foo.X_orig`` / ``foo.X_mask`` pairs (torch.nn.utils.prune) as the
    plain ``foo.X = orig * mask`` entries, and the boolean masks by those names."""
    masks = {key[: -len("_mask")]: value.bool().clone() for key, value in state.items()
             if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state}
    plain = {}
    for key, value in state.items():
        base = key[: -len("_orig")] if key.endswith("_orig") else key[: -len("_mask")]
        if base not in masks:
            plain[key] = value.detach().clone()
        elif key.endswith("_orig"):
            plain[base] = (value * state[base + "_mask"]).detach().clone()
    return plain, masks


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a plain (unmasked) copy of ``model`` would have: masked values folded in."""
    return fold_prune_keys(model.state_dict())[0]


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean keep-masks keyed by parameter name, from prune masks where present."""
    return fold_prune_keys(model.state_dict())[1]


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach (or tighten) prune masks: ``param = param_orig * mask``, pruned entries exactly 0."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        owner_name, _, param = name.rpartition(".")
        module = modules[owner_name]
        if prune.is_pruned(module) and hasattr(module, param + "_mask"):
            mask = mask.to(torch.bool) & getattr(module, param + "_mask").bool()
            prune.remove(module, param)
        prune.custom_from_mask(module, param, mask.to(torch.float32))
