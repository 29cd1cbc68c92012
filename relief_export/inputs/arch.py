"""Architectures named by a file or by ``--arch``, one table of kinds (``ARCH_KINDS``): a zoo
``name``, a ``factory`` ``pkg.module:function`` (imported and run only with ``allow_factory``),
an embedded model ``file`` (embedded.py) or a Hugging Face ``hf`` config (hf_folder.py); and
the weights loaded into them."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..errors import ReliefError, first_line
from ..graph.masks import apply_masks
from ..quiet import current_folder_importable, not_importable
from .embedded import check_file_entry, rebuild
from .hf_folder import check_hf_entry, rebuild_hf
from .loaded import ReadOptions

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


def _check_named(arch: dict[str, Any], where: Any) -> dict[str, Any]:
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and k.isidentifier()
                                               for k in kwargs):
        raise ReliefError(f"{where}: arch kwargs must be a dict with identifier keys, got "
                          f"{kwargs!r}")
    key = "name" if "name" in arch else "factory"
    if not isinstance(arch[key], str) or (key == "factory"
                                          and not _FACTORY.fullmatch(arch[key])):
        raise ReliefError(f"{where}: arch {key} must be a zoo name or look like "
                          f"'package.module:function', got {arch[key]!r}")
    return {key: arch[key], "kwargs": dict(kwargs)}


def _build_named(arch: dict[str, Any], source: Path, options: ReadOptions) -> nn.Module:
    kwargs = dict(arch.get("kwargs", {}))
    if "factory" in arch:
        return _call_factory(arch["factory"], kwargs, source, options.allow_factory)
    if arch["name"] not in models.names():
        raise ReliefError(f"{source}: architecture {arch['name']!r} is not in the model "
                          f"zoo ({', '.join(models.names())})")
    try:
        return models.build(arch["name"], **kwargs)
    except TypeError as error:
        raise ReliefError(f"{source}: bad arguments for {arch['name']}: {error}") from None
    except ReliefError as error:
        raise ReliefError(f"{source}: {error}") from None


# arch key -> (check the entry, build the module)
ARCH_KINDS: dict[str, tuple[Callable[[Any, Any], Any], Callable[..., nn.Module]]] = {
    "name": (_check_named, _build_named),
    "factory": (_check_named, _build_named),
    "file": (lambda arch, where: {"file": check_file_entry(arch["file"], where)},
             lambda arch, source, options: rebuild(arch["file"], source, options)),
    "hf": (lambda arch, where: {"hf": check_hf_entry(arch["hf"], where)},
           lambda arch, source, options: rebuild_hf(arch["hf"], source, options)),
}


def arch_kind(arch: Any) -> str | None:
    return next((k for k in ARCH_KINDS if k in arch), None) if isinstance(arch, dict) else None


def check_arch(arch: Any, where: Any) -> dict[str, Any]:
    kind = arch_kind(arch)
    if kind is None:
        raise ReliefError(f"{where}: arch must be {{'name': zoo name}} or "
                          f"{{'factory': 'pkg.mod:fn'}} with a 'kwargs' dict (or an embedded "
                          f"'file' / 'hf' entry), got {_short(arch)}")
    return ARCH_KINDS[kind][0](arch, where)


def build_arch(arch: dict[str, Any], source: Path, options: ReadOptions) -> nn.Module:
    kind = arch_kind(arch)
    assert kind is not None
    return ARCH_KINDS[kind][1](arch, source, options)


def arch_label(arch: dict[str, Any]) -> str:
    """A short name for messages: the zoo name, the factory, the file kind or the HF class."""
    kind = arch_kind(arch)
    entry = arch.get(kind) if kind else None
    if isinstance(entry, dict):
        return f"{entry.get('class') or entry.get('kind')} ({kind})"
    return str(entry)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + " ..."


def filled(arch: dict[str, Any], state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
           source: Path, options: ReadOptions) -> nn.Module:
    """The architecture built, ``state`` loaded into it, prune ``masks`` applied, in eval."""
    model = build_arch(arch, source, options)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ReliefError(f"{source}: weights do not fit architecture {arch_label(arch)}: "
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
