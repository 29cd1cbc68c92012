"""Atomic file output: a temp file beside the target, fsync, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ReliefError


def check_writable(path: str | Path) -> Path:
    """The output path, after checking its folder exists and accepts new files."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ReliefError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ReliefError(f"{target}: output folder {folder} is not writable")
    if target.is_dir():
        raise ReliefError(f"{target}: is a folder, expected a file name")
    return target


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temp_path)`` then move the finished file to ``path``.

    An existing file at ``path`` is replaced only once the new one is complete; on any
    error the temp file is removed and ``path`` is left as it was.
    """
    target = check_writable(path)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                         dir=target.parent if str(target.parent) else ".")
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return target
