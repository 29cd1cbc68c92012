"""Masks as torch.nn.utils.prune keeps them (``weight_orig * weight_mask``), and back."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a plain (unmasked) copy of ``model`` would have: masked values folded in.

    ``foo.weight_orig`` / ``foo.weight_mask`` pairs become ``foo.weight = orig * mask``.
    """
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            state[base] = (value * model.state_dict()[base + "_mask"]).detach().clone()
        else:
            state[key] = value.detach().clone()
    return state


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Boolean keep-masks keyed by parameter name, from prune masks where present."""
    return {key[: -len("_mask")]: value.bool().clone()
            for key, value in model.state_dict().items() if key.endswith("_mask")}


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
