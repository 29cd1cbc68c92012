"""The masked-model file (``.pt``): a plain dict that loads with ``torch.load(weights_only=True)``.

Keys: ``format`` / ``version``; ``arch`` = {"name": zoo name, "kwargs": {...}} or
{"factory": "pkg.mod:fn", "kwargs": {...}}; ``state_dict`` (pruned entries exactly 0);
``masks`` (bool, by parameter name); ``checksums`` (sha256 of every state_dict and mask
tensor, see ``tensor_sha256``); ``input_shape``; ``data`` (spec it was trained on, or None);
``metrics``; ``history`` (one dict per pruning iteration). Version 1 files (no checksums)
still load, with a note. Every field is checked before it is used.

``read_model`` also reads torch.export archives (``pt2.py``) and, only with ``trust``,
whole pickled modules; what a file is, is judged from its bytes (``safe_torch.sniff``).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import models, validate
from .capture import program_module
from .errors import ReliefError, first_line
from .files import write_file
from .masks import apply_masks, effective_state_dict, fold_prune_keys, masks_of
from .onnx_input import read_onnx
from .pt2 import load_export_archive
from .quiet import current_folder_importable, not_importable
from .safe_torch import ONNX, PT2, TORCH, load_torch_file, sniff

FORMAT = "relief_export.checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_TEXT_LIMIT = 4096
# history / metrics entries that other code reads as numbers
_NUMERIC_RECORD_KEYS = ("iteration", "remaining_weights", "remaining_flops", "val_accuracy",
                        "test_accuracy", "seconds", "init_seed")


@dataclass
class LoadedModel:
    """A model read from a file with what the file says about it."""

    model: nn.Module
    source: Path
    kind: str  # "checkpoint", "torch.export", "onnx", "state_dict", "pickle" or "module"
    input_shape: list[int] | None = None
    data: str | None = None
    arch: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    example_inputs: tuple[torch.Tensor, ...] | None = None  # where one shape cannot say it


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 over ``dtype|shape|`` and the tensor's bytes in row-major order."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{list(tensor.shape)}|".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: dict[str, Any],
                    input_shape: list[int], data: str | None = None,
                    metrics: dict[str, Any] | None = None,
                    history: list[dict[str, Any]] | None = None,
                    inputs: tuple[str | Path, ...] = ()) -> Path:
    """Write ``model`` (masked by prune masks or by zeros) atomically as a checkpoint;
    ``inputs`` are files the output must not replace."""
    validate.module("model", model)
    state, masks = effective_state_dict(model), masks_of(model)
    payload = {
        "format": FORMAT, "version": VERSION, "arch": _check_arch(arch, path),
        "state_dict": state, "masks": masks,
        "checksums": {"state_dict": {k: tensor_sha256(v) for k, v in state.items()},
                      "masks": {k: tensor_sha256(v) for k, v in masks.items()}},
        "input_shape": validate.shape("input_shape", list(input_shape)), "data": data,
        "metrics": dict(metrics or {}), "history": list(history or []),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_file(path, buffer.getvalue(), inputs=inputs)


def load_model(path: str | Path, *, trust: bool = False, allow_factory: bool = False,
               arch: str | None = None, arch_kwargs: dict[str, Any] | None = None
               ) -> nn.Module:
    """A masked model from a checkpoint, a ``.pt2`` torch.export archive, a state_dict with
    its architecture ``arch`` (a zoo name or ``pkg.module:Class``, built with ``arch_kwargs``),
    or (trusted) a pickle."""
    return read_model(path, trust=trust, allow_factory=allow_factory, arch=arch,
                      arch_kwargs=arch_kwargs).model


def read_model(path: str | Path, *, trust: bool = False, allow_factory: bool = False,
               arch: str | None = None, arch_kwargs: dict[str, Any] | None = None
               ) -> LoadedModel:
    """Like ``load_model`` but also returns the file's input shape, data spec, history,
    sha256 and notes."""
    if not isinstance(path, (str, Path)):
        raise ReliefError(f"path must be a file name, got {type(path).__name__}")
    validate.flag("trust", trust)
    validate.flag("allow_factory", allow_factory)
    source = Path(path)
    if not source.is_file():
        raise ReliefError(f"{source}: no such file")
    named = _named_arch(arch, arch_kwargs)
    kind = sniff(source)
    if named is not None and kind != TORCH:
        raise ReliefError(f"{source}: --arch applies to state_dict files; this is a {kind}")
    if kind == ONNX:
        module, shape, notes = read_onnx(source)
        loaded = LoadedModel(module, source, "onnx", shape, notes=notes)
    elif kind == PT2:
        loaded = _read_export_archive(source, trust)
    elif named is not None:
        loaded = _read_state_dict(source, named, allow_factory)
    else:
        loaded = _read_torch_file(source, trust, allow_factory)
    _check_model_tensors(loaded.model, source)
    loaded.sha256 = file_sha256(source)
    return loaded


def _read_torch_file(source: Path, trust: bool, allow_factory: bool) -> LoadedModel:
    payload = load_torch_file(source, trust=trust)
    if isinstance(payload, nn.Module):
        return LoadedModel(payload.eval(), source, "pickle")
    if isinstance(payload, dict) and _state_dict_of(payload) is not None:
        raise ReliefError(f"{source}: a state_dict (weights without their architecture); "
                          "name the architecture with --arch ZOO_NAME or --arch "
                          "pkg.module:Class --allow-factory (arch=... in Python)")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ReliefError(f"{source}: not a relief_export checkpoint (no '{FORMAT}' tag); "
                          "save models with relief_export.save_checkpoint or relief-export train")
    return _from_payload(payload, source, allow_factory)


def _from_payload(payload: dict, source: Path, allow_factory: bool) -> LoadedModel:
    version = payload.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ReliefError(f"{source}: checkpoint version {version!r} is not supported "
                          f"(this relief_export reads versions {READABLE_VERSIONS})")
    arch = _check_arch(payload.get("arch"), source)
    state = _tensor_table(payload.get("state_dict"), "state_dict", source)
    masks = _tensor_table(payload.get("masks", {}), "masks", source)
    notes = _check_checksums(payload, state, masks, source)
    input_shape = payload.get("input_shape")
    if input_shape is not None:
        input_shape = _field(source, "input_shape",
                             lambda: validate.shape("input_shape", input_shape))
    model = _build_arch(arch, source, allow_factory)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ReliefError(f"{source}: weights do not fit architecture {arch}: "
                          f"{_load_error(error)}") from None
    _check_masks(model, masks, source)
    apply_masks(model, masks)
    model.eval()
    return LoadedModel(model, source, "checkpoint", input_shape,
                       _text_or_none(payload.get("data"), "data", source), arch,
                       _record(payload.get("metrics", {}), "metrics", source),
                       _records(payload.get("history", []), source), notes=notes)


def _named_arch(arch: Any, kwargs: Any) -> dict[str, Any] | None:
    """--arch / --arch-kwargs as a checkpoint's arch entry (zoo name or factory)."""
    if arch is None:
        if kwargs:
            raise ReliefError("--arch-kwargs needs --arch")
        return None
    if not isinstance(arch, str):
        raise ReliefError(f"arch must be a zoo name or 'pkg.module:Class', got {arch!r}")
    key = "factory" if ":" in arch else "name"
    return _check_arch({key: arch, "kwargs": dict(kwargs or {})}, "--arch")


def _state_dict_of(payload: dict) -> dict[str, torch.Tensor] | None:
    """The tensors of a state_dict file: the dict itself, or its 'state_dict' entry."""
    table = payload.get("state_dict", payload) if "format" not in payload else None
    if isinstance(table, dict) and table and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in table.items()):
        return table
    return None


def _read_state_dict(source: Path, arch: dict[str, Any], allow_factory: bool) -> LoadedModel:
    """A state_dict file with a named architecture; ``X_orig`` / ``X_mask`` pairs
    (torch.nn.utils.prune) load as ``X = X_orig * X_mask`` with that mask."""
    payload = load_torch_file(source, trust=False)
    state = _state_dict_of(payload) if isinstance(payload, dict) else None
    if state is None:
        raise ReliefError(f"{source}: --arch needs a state_dict file (a dict of tensors), "
                          f"this holds {type(payload).__name__}")
    plain, masks = fold_prune_keys(state)
    model = _build_arch(arch, source, allow_factory)
    try:
        model.load_state_dict(plain)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ReliefError(f"{source}: weights do not fit architecture "
                          f"{arch.get('name') or arch.get('factory')}: "
                          f"{_load_error(error)}") from None
    _check_masks(model, masks, source)
    apply_masks(model, masks)
    return LoadedModel(model.eval(), source, "state_dict", arch=arch)


def _load_error(error: Exception) -> str:
    """load_state_dict's message on one line, without its 'Error(s) in loading' header."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[1:] if len(lines) > 1 else lines)
    return text if len(text) <= 400 else text[:400] + " ..."


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


def _check_masks(model: nn.Module, masks: dict, source: Path) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params or mask.dtype != torch.bool or mask.shape != params[name].shape:
            raise ReliefError(f"{source}: mask {name!r} is not a bool tensor matching a "
                              "parameter of that shape")


def _check_model_tensors(model: nn.Module, source: Path) -> None:
    """Parameters and buffers must be dense and finite (NaN weights are refused)."""
    for name, value in [*model.named_parameters(), *model.named_buffers()]:
        try:
            validate.finite(f"tensor {name}", validate.tensor(f"tensor {name}", value))
        except ReliefError as error:
            raise ReliefError(f"{source}: {error}") from None


def _check_arch(arch: Any, where: Any) -> dict[str, Any]:
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
        except ReliefError as error:
            raise ReliefError(f"{source}: {error}") from None
    return _call_factory(arch["factory"], kwargs, source, allow_factory)


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


def _read_export_archive(source: Path, trust: bool) -> LoadedModel:
    program = load_export_archive(source, trust=trust)
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"
                    and node.name in program.graph_signature.user_inputs]
    values = [node.meta.get("val") for node in placeholders]
    shape, examples = None, None
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise ReliefError(f"{source}: the program's inputs are not all tensors; export a "
                          "wrapper whose forward takes tensors only")
    if len(values) == 1 and values[0].is_floating_point():
        shape = _concrete(values[0].shape)
    else:
        examples = _recorded_examples(program, values)
    module = program_module(program, str(source))
    return LoadedModel(module, source, "torch.export", shape, example_inputs=examples)


def _concrete(shape: Any) -> list[int]:
    """Symbolic sizes (a dynamic batch axis) become 1."""
    return [int(d) if isinstance(d, int) else 1 for d in shape]


def _recorded_examples(program: torch.export.ExportedProgram, values: list[Any]
                       ) -> tuple[torch.Tensor, ...]:
    """The example inputs saved in the archive when they fit the graph's inputs, else seeded
    ones of its shapes: U(0, 1) for floats, zeros for integers (index 0 exists in every
    embedding table)."""
    recorded = program.example_inputs
    if recorded is not None:
        args, kwargs = recorded
        if not kwargs and len(args) == len(values) and all(
                isinstance(a, torch.Tensor) and a.dtype == v.dtype and a.dim() == v.dim()
                for a, v in zip(args, values, strict=True)):
            return tuple(a.detach().clone() for a in args)
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.rand(_concrete(v.shape), generator=generator, dtype=v.dtype)
                 if v.is_floating_point() else torch.zeros(_concrete(v.shape), dtype=v.dtype)
                 for v in values)
