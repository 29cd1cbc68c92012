"""The masked-model file (``.pt``): a plain dict that loads with ``torch.load(weights_only=True)``.

Keys: ``format`` / ``version``; ``arch`` = {"name": zoo name, "kwargs": {...}} or
{"factory": "pkg.mod:fn", "kwargs": {...}}; ``state_dict`` (pruned entries exactly 0);
``masks`` (bool, by parameter name); ``checksums`` (sha256 of every state_dict and mask
tensor, see ``tensor_sha256``); ``input_shape``; ``data`` (spec it was trained on, or None);
``metrics``; ``history`` (one dict per pruning iteration); ``example_inputs`` (optional: a
list of tensors, where one float input shape cannot say what the model takes, e.g. token ids).
Version 1 files (no checksums) still load, with a note. Every field is checked before it is
used.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import validate
from ..errors import ReliefError
from ..files import write_file
from ..graph.masks import effective_state_dict, masks_of
from .arch import check_arch, filled
from .loaded import LoadedModel, ReadOptions

FORMAT = "relief_export.checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_TEXT_LIMIT = 4096
# history / metrics entries that other code reads as numbers
_NUMERIC_RECORD_KEYS = ("iteration", "remaining_weights", "remaining_flops", "val_accuracy",
                        "test_accuracy", "seconds", "init_seed")


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 over ``dtype|shape|`` and the tensor's bytes in row-major order."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{list(tensor.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: dict[str, Any],
                    input_shape: list[int], data: str | None = None,
                    metrics: dict[str, Any] | None = None,
                    history: list[dict[str, Any]] | None = None,
                    inputs: tuple[str | Path, ...] = (),
                    example_inputs: tuple[torch.Tensor, ...] | None = None) -> Path:
    """Write ``model`` (masked by prune masks or by zeros) atomically as a checkpoint;
    ``inputs`` are files the output must not replace."""
    validate.module("model", model)
    state, masks = effective_state_dict(model), masks_of(model)
    payload = {
        "format": FORMAT, "version": VERSION, "arch": check_arch(arch, path),
        "state_dict": state, "masks": masks,
        "checksums": {"state_dict": {k: tensor_sha256(v) for k, v in state.items()},
                      "masks": {k: tensor_sha256(v) for k, v in masks.items()}},
        "input_shape": validate.shape("input_shape", list(input_shape)), "data": data,
        "metrics": dict(metrics or {}), "history": list(history or []),
    }
    if example_inputs is not None:
        payload["example_inputs"] = [validate.tensor("example input", x).detach().cpu()
                                     for x in example_inputs]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_file(path, buffer.getvalue(), inputs=inputs)


def from_payload(payload: dict, source: Path, options: ReadOptions) -> LoadedModel:
    version = payload.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ReliefError(f"{source}: checkpoint version {version!r} is not supported "
                          f"(this relief_export reads versions {READABLE_VERSIONS})")
    arch = check_arch(payload.get("arch"), source)
    state = _tensor_table(payload.get("state_dict"), "state_dict", source)
    masks = _tensor_table(payload.get("masks", {}), "masks", source)
    notes = _check_checksums(payload, state, masks, source)
    input_shape = payload.get("input_shape")
    if input_shape is not None:
        input_shape = _field(source, "input_shape",
                             lambda: validate.shape("input_shape", input_shape))
    model = filled(arch, state, masks, source, options)
    return LoadedModel(model, source, "checkpoint", input_shape,
                       _text_or_none(payload.get("data"), "data", source), arch,
                       _record(payload.get("metrics", {}), "metrics", source),
                       _records(payload.get("history", []), source), notes=notes,
                       example_inputs=_examples(payload.get("example_inputs"), source))


def _examples(value: Any, source: Path) -> tuple[torch.Tensor, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ReliefError(f"{source}: checkpoint field example_inputs must be a list of tensors")
    return tuple(_field(source, "example_inputs",
                        lambda v=v: validate.tensor("example input", v)) for v in value)


def _field(source: Path, name: str, check: Any) -> Any:
    try:
        return check()
    except ReliefError as error:
        raise ReliefError(f"{source}: checkpoint field {error}") from None


def _tensor_table(table: Any, name: str, source: Path) -> dict[str, torch.Tensor]:
    if not isinstance(table, dict):
        raise ReliefError(f"{source}: checkpoint field {name} must be a dict of tensors, got "
                          f"{type(table).__name__}")
    for key, value in table.items():
        if not isinstance(key, str):
            raise ReliefError(f"{source}: checkpoint field {name} has a non-text key {key!r}")
        _field(source, name, lambda k=key, v=value: validate.tensor(f"{name}[{k!r}]", v))
    return table


def _check_checksums(payload: dict, state: dict, masks: dict, source: Path) -> list[str]:
    """Every tensor against its recorded sha256; version 1 files have none (a note)."""
    if payload.get("version") == 1:
        return [f"{source}: written by an older relief_export without checksums; its "
                "tensors cannot be verified (save it again to add them)"]
    sums = payload.get("checksums")
    if not isinstance(sums, dict):
        raise ReliefError(f"{source}: corrupt checkpoint: no checksums table")
    for table_name, table in (("state_dict", state), ("masks", masks)):
        recorded = sums.get(table_name)
        if not isinstance(recorded, dict) or set(recorded) != set(table):
            raise ReliefError(f"{source}: corrupt checkpoint: the {table_name} tensors do not "
                              "match the checksums table")
        for key, tensor in table.items():
            if recorded[key] != tensor_sha256(tensor):
                raise ReliefError(f"{source}: corrupt checkpoint: tensor {key} does not match "
                                  "its checksum")
    return []


def _text_or_none(value: Any, name: str, source: Path) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > _TEXT_LIMIT):
        raise ReliefError(f"{source}: checkpoint field {name} must be text or None, got "
                          f"{type(value).__name__}")
    return value


def _record(value: Any, name: str, source: Path) -> dict[str, Any]:
    """A dict with text keys whose well-known entries are numbers."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ReliefError(f"{source}: checkpoint field {name} must be a dict with text keys")
    for key in _NUMERIC_RECORD_KEYS:
        item = value.get(key)
        if item is not None and (isinstance(item, bool) or not isinstance(item, (int, float))):
            raise ReliefError(f"{source}: checkpoint field {name}[{key!r}] must be a number, "
                              f"got {item!r}")
    return dict(value)


def _records(value: Any, source: Path) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ReliefError(f"{source}: checkpoint field history must be a list of dicts")
    return [_record(entry, f"history[{i}]", source) for i, entry in enumerate(value)]
