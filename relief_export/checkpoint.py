"""The masked-model file (``.pt``): a plain dict that loads with ``torch.load(weights_only=True)``.

Keys: ``format`` / ``version``; ``arch`` = {"name": zoo name, "kwargs": {...}} or
{"factory": "pkg.mod:fn", "kwargs": {...}}; ``state_dict`` (pruned entries exactly 0);
``masks`` (bool, by parameter name); ``input_shape``; ``data`` (spec it was trained on, or
None); ``metrics``; ``history`` (one dict per pruning iteration).
"""

from __future__ import annotations

import importlib
import pickle
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import models
from .errors import ReliefError, first_line
from .files import atomic_write
from .masks import apply_masks, effective_state_dict, masks_of

FORMAT = "relief_export.checkpoint"
VERSION = 1


@dataclass
class LoadedModel:
    """A model read from a file with what the file says about it."""

    model: nn.Module
    source: Path
    kind: str  # "checkpoint", "torch.export" or "pickle"
    input_shape: list[int] | None = None
    data: str | None = None
    arch: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: dict[str, Any],
                    input_shape: list[int], data: str | None = None,
                    metrics: dict[str, Any] | None = None,
                    history: list[dict[str, Any]] | None = None) -> Path:
    """Write ``model`` (masked by prune masks or by zeros) atomically as a checkpoint."""
    payload = {
        "format": FORMAT, "version": VERSION, "arch": _check_arch(arch, path),
        "state_dict": effective_state_dict(model), "masks": masks_of(model),
        "input_shape": [int(v) for v in input_shape], "data": data,
        "metrics": dict(metrics or {}), "history": list(history or []),
    }
    return atomic_write(path, lambda temp: torch.save(payload, temp))


def load_model(path: str | Path, *, trust: bool = False,
               allow_factory: bool = False) -> nn.Module:
    """A masked model from a checkpoint, a ``.pt2`` torch.export archive, or (trusted) a pickle."""
    return read_model(path, trust=trust, allow_factory=allow_factory).model


def read_model(path: str | Path, *, trust: bool = False,
               allow_factory: bool = False) -> LoadedModel:
    """Like ``load_model`` but also returns the file's input shape, data spec and history."""
    source = Path(path)
    if not source.is_file():
        raise ReliefError(f"{source}: no such file")
    if _is_export_archive(source):
        return _read_export_archive(source)
    payload = _torch_load(source, trust)
    if isinstance(payload, nn.Module):
        return LoadedModel(payload.eval(), source, "pickle")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ReliefError(f"{source}: not a relief_export checkpoint (no '{FORMAT}' tag); "
                          "save models with relief_export.save_checkpoint or relief-export train")
    return _from_payload(payload, source, allow_factory)


def _torch_load(source: Path, trust: bool) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" not in str(error).lower() and "Unsupported global" not in str(error):
            raise ReliefError(f"{source}: corrupt or not a torch file ({first_line(error)})"
                              ) from None
        if not trust:
            raise ReliefError(
                f"{source}: holds pickled Python objects (a whole nn.Module?); loading them can "
                "run arbitrary code, so it is refused. If you trust this file, pass "
                "--trust-pickle (trust=True); better, save a relief_export checkpoint or a "
                ".pt2 torch.export archive") from None
    except Exception as error:  # torch.load raises many kinds on damaged files
        raise ReliefError(f"{source}: corrupt or truncated torch file ({first_line(error)})"
                          ) from None
    try:
        return torch.load(source, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ReliefError(f"{source}: cannot unpickle ({first_line(error)})") from None


def _from_payload(payload: dict, source: Path, allow_factory: bool) -> LoadedModel:
    version = payload.get("version")
    if version != VERSION:
        raise ReliefError(f"{source}: checkpoint version {version!r} is not supported "
                          f"(this relief_export reads version {VERSION})")
    arch = _check_arch(payload.get("arch"), source)
    model = _build_arch(arch, source, allow_factory)
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ReliefError(f"{source}: checkpoint has no state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ReliefError(f"{source}: weights do not fit architecture {arch}: "
                          f"{first_line(error)}") from None
    masks = payload.get("masks") or {}
    _check_masks(model, masks, source)
    apply_masks(model, masks)
    model.eval()
    return LoadedModel(model, source, "checkpoint", list(payload.get("input_shape") or []) or None,
                       payload.get("data"), arch, dict(payload.get("metrics") or {}),
                       list(payload.get("history") or []))


def _check_masks(model: nn.Module, masks: dict, source: Path) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or not isinstance(mask, torch.Tensor) \
                or mask.shape != params[name].shape:
            raise ReliefError(f"{source}: mask {name!r} matches no parameter of that shape")


def _check_arch(arch: Any, where: Any) -> dict[str, Any]:
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs", {}), dict) or (
            not isinstance(arch.get("name"), str) and not isinstance(arch.get("factory"), str)):
        raise ReliefError(f"{where}: arch must be {{'name': zoo name}} or "
                          f"{{'factory': 'pkg.mod:fn'}} with a 'kwargs' dict, got {arch!r}")
    return {k: arch[k] for k in ("name", "factory", "kwargs") if k in arch}


def _build_arch(arch: dict[str, Any], source: Path, allow_factory: bool) -> nn.Module:
    kwargs = dict(arch.get("kwargs", {}))
    if "name" in arch:
        if arch["name"] not in models.names():
            raise ReliefError(f"{source}: architecture {arch['name']!r} is not in the model "
                              f"zoo ({', '.join(models.names())})")
        try:
            return models.build(arch["name"], **kwargs)
        except TypeError as error:
            raise ReliefError(f"{source}: bad arguments for {arch['name']}: {error}") from None
    return _call_factory(arch["factory"], kwargs, source, allow_factory)


def _call_factory(spec: str, kwargs: dict, source: Path, allow_factory: bool) -> nn.Module:
    if not allow_factory:
        raise ReliefError(f"{source}: the model is built by the factory {spec!r}, which means "
                          "importing and running that code; pass --allow-factory "
                          "(allow_factory=True) if you trust it")
    module_name, _, function_name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
        model = factory(**kwargs)
    except Exception as error:
        raise ReliefError(f"{source}: factory {spec!r} failed: {first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ReliefError(f"{source}: factory {spec!r} returned {type(model).__name__}, "
                          "not an nn.Module")
    return model


def _is_export_archive(source: Path) -> bool:
    if source.suffix == ".pt2":
        return True
    if not zipfile.is_zipfile(source):
        return False
    try:
        with zipfile.ZipFile(source) as archive:
            return any(n.endswith("archive_format") for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _read_export_archive(source: Path) -> LoadedModel:
    try:
        program = torch.export.load(str(source))
    except Exception as error:
        raise ReliefError(f"{source}: corrupt or unreadable torch.export archive "
                          f"({first_line(error)})") from None
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"
                    and node.name in program.graph_signature.user_inputs]
    shape = None
    if len(placeholders) == 1 and "val" in placeholders[0].meta:
        shape = [int(d) if isinstance(d, int) else 1 for d in placeholders[0].meta["val"].shape]
    module = program.module()
    _drop_shape_guards(module)
    # An exported graph is fixed to the mode it was captured in; train() / eval() would raise.
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]
    module.eval = types.MethodType(lambda self: self, module)  # type: ignore[method-assign]
    return LoadedModel(module, source, "torch.export", shape)


def _drop_shape_guards(module: nn.Module) -> None:
    """Remove the input-shape guard of an unlifted program, so that any batch size the graph
    itself supports runs (the ONNX export has a dynamic batch axis)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target) == "_guards_fn" and not node.users:
            graph.erase_node(node)
    module.recompile()  # type: ignore[operator]
