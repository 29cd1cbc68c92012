"""The one entry for models from files: what a file is, is judged from its bytes
(``safe_torch.sniff``), then one table of file kinds names the reader of each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .. import validate
from ..errors import ReliefError
from .arch import named_arch
from .loaded import LoadedModel, check_model_tensors, file_sha256
from .onnx_graph import read_onnx_file
from .pt2 import read_export_archive
from .safe_torch import ONNX, PT2, TORCH, sniff
from .torch_file import read_state_dict, read_torch_file


@dataclass(frozen=True)
class ReadOptions:
    """What the caller allows: ``trust`` (unpickle code), ``allow_factory`` (run an
    architecture factory) and the architecture ``--arch`` names for a state_dict."""

    trust: bool
    allow_factory: bool
    arch: dict[str, Any] | None


def _torch_file(source: Path, options: ReadOptions) -> LoadedModel:
    if options.arch is not None:
        return read_state_dict(source, options.arch, options.allow_factory)
    return read_torch_file(source, options.trust, options.allow_factory)


# file kind -> its reader; --arch applies only to the kinds marked True
READERS: dict[str, tuple[Callable[[Path, ReadOptions], LoadedModel], bool]] = {
    TORCH: (_torch_file, True),
    PT2: (lambda source, options: read_export_archive(source, options.trust), False),
    ONNX: (lambda source, options: read_onnx_file(source), False),
}


def load_model(path: str | Path, *, trust: bool = False, allow_factory: bool = False,
               arch: str | None = None, arch_kwargs: dict[str, Any] | None = None
               ) -> nn.Module:
    """A masked model from a checkpoint, a ``.pt2`` torch.export archive, an ONNX model, a
    state_dict with its architecture ``arch`` (a zoo name or ``pkg.module:Class``, built with
    ``arch_kwargs``), or (trusted) a pickle."""
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
    options = ReadOptions(trust, allow_factory, named_arch(arch, arch_kwargs))
    kind = sniff(source)
    reader, takes_arch = READERS[kind]
    if options.arch is not None and not takes_arch:
        raise ReliefError(f"{source}: --arch applies to state_dict files; this is a {kind}")
    loaded = reader(source, options)
    check_model_tensors(loaded.model, source)
    loaded.sha256 = file_sha256(source)
    return loaded
