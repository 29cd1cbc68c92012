"""Reading torch files without running code from them.

- ``sniff``: what a file is, from its bytes (never its suffix): a torch.export archive, a
  ``torch.save`` file, an ONNX model, or nothing we read.
- ``verify_zip``: the zip directory parses and every member matches its CRC-32 (torch's own
  reader checks neither), so flipped bytes in any member are caught before loading; done
  once per load, by the loader (``sniff`` only reads the directory).
- ``load_torch_file``: ``torch.load(weights_only=True)``; a file that fails only because its
  well-formed pickle names Python objects is refused with the first such name and the offer
  of ``trust``; any other failure is called corrupt.
- ``no_unpickling``: while active, ``pickle.load(s)`` raise and ``torch.load`` is forced to
  ``weights_only=True`` (defence in depth around torch code that may unpickle).
"""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import ReliefError, first_line
from ..quiet import current_folder_importable, not_importable, quiet_libraries
from ..validate import allocation

PT2, TORCH, ONNX = "torch.export archive", "torch file", "ONNX model"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def sniff(path: Path) -> str:
    """PT2, TORCH or ONNX, judged by content; ReliefError for anything else."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as error:
        raise ReliefError(f"{path}: cannot read ({error.strerror})") from None
    if head == _ZIP_MAGIC:
        names = zip_names(path)
        if any(_under_root(n) in ("archive_format", "serialized_exported_program.json")
               for n in names):
            return PT2
        if any(_under_root(n) == "data.pkl" for n in names):
            return TORCH
        raise ReliefError(f"{path}: a zip archive, but neither a torch.save file nor a "
                          "torch.export archive")
    if head[:1] == bytes([_PICKLE_PROTOCOL]):
        return TORCH
    if _is_onnx(path):
        return ONNX
    raise ReliefError(f"{path}: corrupt, or not a file relief_export reads (a relief_export "
                      "checkpoint .pt, a torch.export archive .pt2 or an ONNX model)")


def _under_root(name: str) -> str:
    """A member's path below the archive's root folder (``root/data.pkl`` -> ``data.pkl``)."""
    return name.split("/", 1)[1] if "/" in name else name


def _is_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and others on non-ONNX bytes
        return False
    return model.ir_version > 0 and len(model.graph.node) > 0


def zip_names(path: Path) -> list[str]:
    """Member names, after checking the directory (cheap: no member is read)."""
    return _open_zip(path, check_crc=False)


def verify_zip(path: Path) -> list[str]:
    """Member names, after checking the directory and every member's CRC-32."""
    return _open_zip(path, check_crc=True)


def _open_zip(path: Path, *, check_crc: bool) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            allocation(f"{path}: the archive's members",
                       sum(member.file_size for member in members))
            broken = archive.testzip() if check_crc else None
            names = [member.filename for member in members]
    except ReliefError:
        raise
    except Exception as error:  # zipfile raises many kinds on damaged archives
        raise ReliefError(f"{path}: corrupt or truncated zip archive ({first_line(error)})"
                          ) from None
    if broken is not None:
        raise ReliefError(f"{path}: corrupt: member {broken} does not match its CRC-32")
    if not members or min(member.header_offset for member in members) != 0:
        raise ReliefError(f"{path}: corrupt or truncated zip archive (its directory does not "
                          "describe the file from its first byte)")
    if len(set(names)) != len(names):
        raise ReliefError(f"{path}: corrupt zip archive (duplicate member names)")
    return names


def read_member(path: Path, name: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(name)
    except Exception as error:
        raise ReliefError(f"{path}: corrupt or truncated zip archive ({first_line(error)})"
                          ) from None


def load_torch_file(path: Path, *, trust: bool) -> Any:
    """The object in a ``torch.save`` file, loaded without running code unless ``trust``."""
    _check_pickle(path)
    try:
        with no_unpickling(), quiet_libraries():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        name = refused_global(error)
        if name is None:
            raise ReliefError(f"{path}: corrupt torch file ({first_line(error)})") from None
        if not trust:
            raise ReliefError(
                f"{path}: holds pickled Python objects ({name}); loading them runs code from "
                "the file, so it is refused. Pass --trust-pickle (trust=True) only if you "
                "trust the file, or save a relief_export checkpoint or a .pt2 archive "
                "instead") from None
    return _load_trusted(path)


def _check_pickle(path: Path) -> None:
    """A zip-format torch file's ``data.pkl`` must be a well-formed pickle."""
    if not zipfile.is_zipfile(path):
        return
    names = verify_zip(path)
    pickles = [n for n in names if _under_root(n) == "data.pkl"]
    if len(pickles) != 1:
        raise ReliefError(f"{path}: corrupt torch file ({len(pickles)} data.pkl members)")
    try:
        for _ in pickletools.genops(read_member(path, pickles[0])):
            pass
    except ReliefError:
        raise
    except Exception as error:
        raise ReliefError(f"{path}: corrupt torch file (its pickle is malformed: "
                          f"{first_line(error)})") from None


def refused_global(error: BaseException) -> str | None:
    """The Python object a well-formed pickle names that weights_only refuses, if that is
    why loading failed."""
    match = _UNSUPPORTED_GLOBAL.search(str(error))
    return match.group(1) if match else None


def _load_trusted(path: Path) -> Any:
    """A full unpickle (runs code from the file), with the current folder importable as
    ``python -m`` has it, so classes defined beside the user's script resolve."""
    try:
        with quiet_libraries(), current_folder_importable():
            return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        raise ReliefError(f"{path}: the pickle needs {not_importable(error)}") from None
    except Exception as error:
        raise ReliefError(f"{path}: cannot unpickle ({first_line(error)})") from None


@contextlib.contextmanager
def no_unpickling() -> Iterator[None]:
    """Make every unpickling route safe while active (see the module docstring)."""
    original_load, original_loads, original_torch_load = pickle.load, pickle.loads, torch.load

    def refuse(*_: Any, **__: Any) -> Any:
        raise ReliefError("refused to unpickle Python objects from an untrusted file")

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original_torch_load(*args, **kwargs)

    pickle.load, pickle.loads = refuse, refuse
    torch.load = weights_only_load
    try:
        yield
    finally:
        pickle.load, pickle.loads = original_load, original_loads
        torch.load = original_torch_load


def load_bytes_weights_only(data: bytes) -> Any:
    """``torch.load(weights_only=True)`` of bytes, guarded like a file."""
    with no_unpickling(), quiet_libraries():
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
