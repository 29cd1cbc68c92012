"""What every reader returns: the model and what its file says about it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import validate
from ..errors import ReliefError


@dataclass
class LoadedModel:
    """A model read from a file with what the file says about it."""

    model: nn.Module
    source: Path
    kind: str  # "checkpoint", "torch.export", "onnx", "state_dict", "pickle", "hf" or "module"
    input_shape: list[int] | None = None
    data: str | None = None
    arch: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    example_inputs: tuple[torch.Tensor, ...] | None = None  # where one shape cannot say it


@dataclass(frozen=True)
class ReadOptions:
    """What the caller allows: ``trust`` (unpickle code), ``allow_factory`` (run an
    architecture factory), ``trust_remote_code`` (a Hugging Face folder's own code) and the
    architecture ``--arch`` names for a state_dict."""

    trust: bool = False
    allow_factory: bool = False
    arch: dict[str, Any] | None = None
    trust_remote_code: bool = False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_model_tensors(model: nn.Module, source: Path) -> None:
    """Parameters and buffers must be dense and finite (NaN weights are refused)."""
    for name, value in [*model.named_parameters(), *model.named_buffers()]:
        try:
            validate.finite(f"tensor {name}", validate.tensor(f"tensor {name}", value))
        except ReliefError as error:
            raise ReliefError(f"{source}: {error}") from None
