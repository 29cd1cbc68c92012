"""Files written by ``torch.save``: our checkpoints, state_dicts (with ``--arch``: their
architecture) and, only with ``trust``, whole pickled modules. Everything else is unpickled
weights-only (``safe_torch.load_torch_file``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReliefError
from ..graph.masks import fold_prune_keys
from .arch import filled
from .checkpoint import FORMAT, from_payload
from .loaded import LoadedModel, ReadOptions
from .safe_torch import load_torch_file


def read_torch_file(source: Path, options: ReadOptions) -> LoadedModel:
    payload = load_torch_file(source, trust=options.trust)
    if isinstance(payload, nn.Module):
        return LoadedModel(payload.eval(), source, "pickle")
    if isinstance(payload, dict) and state_dict_of(payload) is not None:
        raise ReliefError(f"{source}: a state_dict (weights without their architecture); "
                          "name the architecture with --arch ZOO_NAME or --arch "
                          "pkg.module:Class --allow-factory (arch=... in Python)")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ReliefError(f"{source}: not a relief_export checkpoint (no '{FORMAT}' tag); "
                          "save models with relief_export.save_checkpoint or relief-export train")
    return from_payload(payload, source, options)


def state_dict_of(payload: dict) -> dict[str, torch.Tensor] | None:
    """The tensors of a state_dict file: the dict itself, or its 'state_dict' entry."""
    table = payload.get("state_dict", payload) if "format" not in payload else None
    if isinstance(table, dict) and table and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in table.items()):
        return table
    return None


def read_state_dict(source: Path, arch: dict[str, Any], options: ReadOptions) -> LoadedModel:
    """A state_dict file with a named architecture; ``X_orig`` / ``X_mask`` pairs
    (torch.nn.utils.prune) load as ``X = X_orig * X_mask`` with that mask."""
    payload = load_torch_file(source, trust=False)
    state = state_dict_of(payload) if isinstance(payload, dict) else None
    if state is None:
        raise ReliefError(f"{source}: --arch needs a state_dict file (a dict of tensors), "
                          f"this holds {type(payload).__name__}")
    plain, masks = fold_prune_keys(state)
    return LoadedModel(filled(arch, plain, masks, source, options), source, "state_dict",
                       arch=arch)
