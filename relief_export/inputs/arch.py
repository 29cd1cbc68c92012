"""Architectures named by a file or by ``--arch``: a zoo name, or a factory
``pkg.module:function`` (imported and run only with ``allow_factory``), and the weights loaded
into them."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..errors import ReliefError, first_line
from ..graph.masks import apply_masks
from ..quiet import current_folder_importable, not_importable

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def named_arch(arch: Any, kwargs: Any) -> dict[str, Any] | None:
    """--arch / --arch-kwargs as a checkpoint's arch entry (zoo name or factory)."""
    if arch is None:
        if kwargs:
            raise ReliefError("--arch-kwargs needs --arch")
        return None
    if not isinstance(arch, str):
        raise ReliefError(f"arch must be a zoo name or 'pkg.module:Class', got {arch!r}")
    key = "factory" if ":" in arch else "name"
    return check_arch({key: arch, "kwargs": dict(kwargs or {})}, "--arch")


def check_arch(arch: Any, where: Any) -> dict[str, Any]:
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs", {}), dict) or (
            not isinstance(arch.get("name"), str) and not isinstance(arch.get("factory"), str)):
        raise ReliefError(f"{where}: arch must be {{'name': zoo name}} or "
                          f"{{'factory': 'pkg.mod:fn'}} with a 'kwargs' dict, got {arch!r}")
    kwargs = arch.get("kwargs", {})
    if not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ReliefError(f"{where}: arch kwargs must have identifier keys, got {list(kwargs)}")
    if "factory" in arch and not _FACTORY.fullmatch(arch["factory"]):
        raise ReliefError(f"{where}: arch factory must look like 'package.module:function', "
                          f"got {arch['factory']!r}")
    return {k: arch[k] for k in ("name", "factory", "kwargs") if k in arch}


def build_arch(arch: dict[str, Any], source: Path, allow_factory: bool) -> nn.Module:
    kwargs = dict(arch.get("kwargs", {}))
    if "name" in arch:
        if arch["name"] not in models.names():
            raise ReliefError(f"{source}: architecture {arch['name']!r} is not in the model "
                              f"zoo ({', '.join(models.names())})")
        try:
            return models.build(arch["name"], **kwargs)
        except TypeError as error:
            raise ReliefError(f"{source}: bad arguments for {arch['name']}: {error}") from None
        except ReliefError as error:
            raise ReliefError(f"{source}: {error}") from None
    return _call_factory(arch["factory"], kwargs, source, allow_factory)


def filled(arch: dict[str, Any], state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
           source: Path, allow_factory: bool) -> nn.Module:
    """The architecture built, ``state`` loaded into it, prune ``masks`` applied, in eval."""
    model = build_arch(arch, source, allow_factory)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ReliefError(f"{source}: weights do not fit architecture "
                          f"{arch.get('name') or arch.get('factory')}: "
                          f"{_load_error(error)}") from None
    _check_masks(model, masks, source)
    apply_masks(model, masks)
    return model.eval()


def _call_factory(spec: str, kwargs: dict, source: Path, allow_factory: bool) -> nn.Module:
    if not allow_factory:
        raise ReliefError(f"{source}: the model is built by the factory {spec!r}, which means "
                          "importing and running that code; pass --allow-factory "
                          "(allow_factory=True) if you trust it")
    module_name, _, function_name = spec.partition(":")
    try:
        with current_folder_importable():
            factory = getattr(importlib.import_module(module_name), function_name)
            model = factory(**kwargs)
    except ModuleNotFoundError as error:
        raise ReliefError(f"{source}: factory {spec!r} needs {not_importable(error)}") from None
    except Exception as error:
        raise ReliefError(f"{source}: factory {spec!r} failed: {first_line(error)}") from None
    if not isinstance(model, nn.Module):
        raise ReliefError(f"{source}: factory {spec!r} returned {type(model).__name__}, "
                          "not an nn.Module")
    return model


def _load_error(error: Exception) -> str:
    """load_state_dict's message on one line, without its 'Error(s) in loading' header."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[1:] if len(lines) > 1 else lines)
    return text if len(text) <= 400 else text[:400] + " ..."


def _check_masks(model: nn.Module, masks: dict, source: Path) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or mask.dtype != torch.bool or mask.shape != params[name].shape:
            raise ReliefError(f"{source}: mask {name!r} is not a bool tensor matching a "
                              "parameter of that shape")
