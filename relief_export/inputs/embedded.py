"""Models whose file holds their own architecture (a torch.export archive, an ONNX model, a
trusted pickle) are saved in our checkpoint with that file embedded:
``arch = {"file": {"kind": K, "bytes": uint8 tensor, "sha256": hex}}``. Loading the checkpoint
reads the embedded file again with the reader of its kind, then loads the saved weights and
masks into it (``arch.filled``). A pickle still needs ``trust`` to be read again."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReliefError
from .loaded import LoadedModel, ReadOptions
from .onnx_graph import read_onnx_file
from .pt2 import read_export_archive
from .safe_torch import load_torch_file


def _pickle(path: Path, options: ReadOptions) -> nn.Module:
    if not options.trust:
        raise ReliefError("the model was saved from a pickled nn.Module; reading it again "
                          "runs code from it: pass --trust-pickle (trust=True) if you trust it")
    module = load_torch_file(path, trust=True)
    if not isinstance(module, nn.Module):
        raise ReliefError(f"the embedded pickle holds {type(module).__name__}, not a module")
    return module


# LoadedModel.kind -> (file suffix, reader of the embedded file)
FILE_KINDS: dict[str, tuple[str, Callable[[Path, ReadOptions], nn.Module]]] = {
    "torch.export": (".pt2", lambda path, options: read_export_archive(path, options.trust)
                     .model),
    "onnx": (".onnx", lambda path, options: read_onnx_file(path).model),
    "pickle": (".pt", _pickle),
}


def file_arch(loaded: LoadedModel) -> dict[str, Any]:
    """The arch entry embedding the file ``loaded`` was read from."""
    if loaded.kind not in FILE_KINDS:
        raise ReliefError(f"{loaded.source}: a {loaded.kind} model does not carry its "
                          "architecture in its file")
    data = loaded.source.read_bytes()
    return {"file": {"kind": loaded.kind, "sha256": hashlib.sha256(data).hexdigest(),
                     "bytes": torch.frombuffer(bytearray(data), dtype=torch.uint8)}}


def check_file_entry(entry: Any, where: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or entry.get("kind") not in FILE_KINDS or \
            not isinstance(entry.get("bytes"), torch.Tensor) or \
            entry["bytes"].dtype != torch.uint8 or entry["bytes"].ndim != 1 or \
            not isinstance(entry.get("sha256"), str):
        raise ReliefError(f"{where}: arch file entry must hold kind ({', '.join(FILE_KINDS)}), "
                          "bytes (a uint8 tensor) and sha256")
    if hashlib.sha256(_bytes(entry)).hexdigest() != entry["sha256"]:
        raise ReliefError(f"{where}: corrupt checkpoint: the embedded model file does not "
                          "match its checksum")
    return {k: entry[k] for k in ("kind", "sha256", "bytes")}


def rebuild(entry: dict[str, Any], source: Path, options: ReadOptions) -> nn.Module:
    """The embedded file read again by its kind's reader (from a private temporary copy)."""
    suffix, read = FILE_KINDS[entry["kind"]]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"embedded{suffix}"
        path.write_bytes(_bytes(entry))
        try:
            return read(path, options)
        except ReliefError as error:
            text = str(error).replace(str(path), "its embedded model file")
            raise ReliefError(f"{source}: {text}") from None


def _bytes(entry: dict[str, Any]) -> bytes:
    return entry["bytes"].contiguous().numpy().tobytes()
