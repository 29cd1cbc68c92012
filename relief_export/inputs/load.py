"""The one entry for models from files: what a file is, is judged from its bytes
(``safe_torch.sniff``; a folder with config.json is a Hugging Face model), then one table of
kinds names the reader of each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .. import validate
from ..errors import ReliefError
from .arch import named_arch
from .embedded import file_arch
from .hf_folder import is_hf_folder, read_hf_folder
from .loaded import LoadedModel, ReadOptions, check_model_tensors, file_sha256
from .onnx_graph import read_onnx_file
from .pt2 import read_export_archive
from .safe_torch import ONNX, PT2, TORCH, sniff
from .torch_file import read_state_dict, read_torch_file

HF_FOLDER = "Hugging Face folder"


def _torch_file(source: Path, options: ReadOptions) -> LoadedModel:
    if options.arch is not None:
        return read_state_dict(source, options.arch, options)
    return read_torch_file(source, options)


# file kind -> its reader; --arch applies only to the kinds marked True
READERS: dict[str, tuple[Callable[[Path, ReadOptions], LoadedModel], bool]] = {
    TORCH: (_torch_file, True),
    PT2: (lambda source, options: read_export_archive(source, options.trust), False),
    ONNX: (lambda source, options: read_onnx_file(source), False),
    HF_FOLDER: (read_hf_folder, False),
}


def load_model(path: str | Path, *, trust: bool = False, allow_factory: bool = False,
               arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               trust_remote_code: bool = False) -> nn.Module:
    """A masked model from a checkpoint, a ``.pt2`` torch.export archive, an ONNX model, a
    state_dict with its architecture ``arch`` (a zoo name or ``pkg.module:Class``, built with
    ``arch_kwargs``), a Hugging Face folder (``save_pretrained``), or (trusted) a pickle."""
    return read_model(path, trust=trust, allow_factory=allow_factory, arch=arch,
                      arch_kwargs=arch_kwargs, trust_remote_code=trust_remote_code).model


def read_model(path: str | Path, *, trust: bool = False, allow_factory: bool = False,
               arch: str | None = None, arch_kwargs: dict[str, Any] | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Like ``load_model`` but also returns the file's input shape, data spec, history,
    sha256 and notes."""
    if not isinstance(path, (str, Path)):
        raise ReliefError(f"path must be a file name, got {type(path).__name__}")
    validate.flag("trust", trust)
    validate.flag("allow_factory", allow_factory)
    validate.flag("trust_remote_code", trust_remote_code)
    source = Path(path)
    if source.is_dir() and not is_hf_folder(source):
        raise ReliefError(f"{source}: a folder, but not a Hugging Face model (no config.json); "
                          "pass a model file or a folder saved with save_pretrained")
    if not source.exists():
        raise ReliefError(f"{source}: no such file")
    options = ReadOptions(trust, allow_factory, named_arch(arch, arch_kwargs), trust_remote_code)
    kind = HF_FOLDER if source.is_dir() else sniff(source)
    reader, takes_arch = READERS[kind]
    if options.arch is not None and not takes_arch:
        raise ReliefError(f"{source}: --arch applies to state_dict files; this is a {kind}")
    loaded = reader(source, options)
    check_model_tensors(loaded.model, source)
    loaded.sha256 = loaded.sha256 or file_sha256(source)
    return loaded


def architecture_of(loaded: LoadedModel) -> dict[str, Any]:
    """What a checkpoint of ``loaded``'s model records to rebuild it: the file's own arch
    entry, or the model file itself embedded (torch.export, ONNX, pickle)."""
    return loaded.arch if loaded.arch is not None else file_arch(loaded)
