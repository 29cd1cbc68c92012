"""The one writer of output files.

Every output goes to a temp file in its target folder (named ``.NAME.PID.RANDOM.tmp``, mode
0666 less the umask), is fsynced, and renamed over the target only when complete. Several
outputs of one command are written all or none: every temp file is finished before the first
rename. Special targets are never replaced: a character device (``/dev/null``) or a FIFO with
a reader is written directly; sockets, block devices and files on virtual file systems
(``/proc``, ``/sys``) are refused. An output that is one of the command's inputs is refused.
Every OSError becomes one ``ReliefError`` naming the path and the cause. Temp files left by
a killed run are removed by the next write to the same target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import ReliefError

VIRTUAL_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs",
    "pstore", "bpf", "fusectl", "efivarfs", "binfmt_misc", "mqueue", "autofs"})
_TEMP_SUFFIX = ".tmp"

PathLike = str | Path


def describe_os_error(error: OSError, path: PathLike | None = None) -> str:
    """``PATH: cause`` for an OSError (ENOSPC -> 'No space left on device', ...)."""
    where = path if path is not None else (error.filename or "file")
    cause = error.strerror or str(error) or type(error).__name__
    return f"{where}: {cause}"


def check_output(path: PathLike, *, inputs: Iterable[PathLike] = ()) -> Path:
    """The output path, after checking it can be written and is none of ``inputs``.

    Call it before long work so that a bad ``--out`` fails at once. A symbolic link is
    followed (its target is written).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ReliefError(f"output path must be a file name, got {path!r}")
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    folder = target.parent
    if not folder.is_dir():
        raise ReliefError(f"{path}: output folder {folder} does not exist")
    filesystem = _filesystem_type(folder)
    if filesystem in VIRTUAL_FILESYSTEMS:
        raise ReliefError(f"{path}: {folder} is on a virtual file system ({filesystem}); "
                          "choose a real folder")
    _check_existing(target, path)
    if not target.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise ReliefError(f"{path}: output folder {folder} is not writable")
    for source in inputs:
        if _same_file(target, Path(source)):
            raise ReliefError(f"{path}: this output is the input model {source}; choose "
                              "another name (inputs are never overwritten)")
    return target


def write_file(path: PathLike, data: bytes, *, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    return write_files({path: data}, inputs=inputs)[0]


def write_files(files: Mapping[PathLike, bytes], *,
                inputs: Iterable[PathLike] = ()) -> list[Path]:
    """Write every file or none: all temp files are complete before the first rename."""
    sources = list(inputs)
    targets = [check_output(path, inputs=sources) for path in files]
    if len({t.resolve() for t in targets}) != len(targets):
        raise ReliefError("the output files must all be different: "
                          + ", ".join(str(p) for p in files))
    staged: list[tuple[Path, Path | None, bytes]] = []
    try:
        for (path, data), target in zip(files.items(), targets, strict=True):
            staged.append((target, None if _is_special(target) else _stage(target, data, path),
                           data))
        return _commit(staged, list(files))
    finally:
        for _, temp, _ in staged:
            if temp is not None:
                with contextlib.suppress(OSError):
                    temp.unlink()


def _stage(target: Path, data: bytes, shown: PathLike) -> Path:
    """A complete, fsynced temp file beside ``target`` holding ``data``."""
    _remove_stale_temps(target)
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    try:
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise ReliefError(describe_os_error(error, shown)) from None
    try:
        _write_all(handle, data)
        os.fsync(handle)
    except OSError as error:
        os.close(handle)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise ReliefError(describe_os_error(error, shown)) from None
    os.close(handle)
    return temp


def _commit(staged: list[tuple[Path, Path | None, bytes]], shown: list[PathLike]) -> list[Path]:
    done: list[Path] = []
    for (target, temp, data), name in zip(staged, shown, strict=True):
        try:
            if temp is None:
                _write_special(target, data)
            else:
                os.replace(temp, target)
                _sync_folder(target.parent)
        except OSError as error:
            written = f" (already written: {', '.join(map(str, done))})" if done else ""
            raise ReliefError(describe_os_error(error, name) + written) from None
        done.append(target)
    return done


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def _write_special(target: Path, data: bytes) -> None:
    """Write straight into a character device or a FIFO (which must have a reader)."""
    try:
        handle = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "a FIFO with no process reading it") from None
        raise
    try:
        os.set_blocking(handle, True)
        _write_all(handle, data)
    finally:
        os.close(handle)


def _check_existing(target: Path, shown: PathLike) -> None:
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise ReliefError(describe_os_error(error, shown)) from None
    if stat.S_ISDIR(mode):
        raise ReliefError(f"{shown}: is a folder, expected a file name")
    if stat.S_ISSOCK(mode) or stat.S_ISBLK(mode):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a block device"
        raise ReliefError(f"{shown}: is {kind}; refusing to write model data into it")
    if stat.S_ISREG(mode) and not os.access(target, os.W_OK) \
            and not os.access(target.parent, os.W_OK | os.X_OK):
        raise ReliefError(f"{shown}: is not writable")


def _is_special(target: Path) -> bool:
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _remove_stale_temps(target: Path) -> None:
    """Remove ``.NAME.PID.*.tmp`` files whose writing process no longer exists."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(_TEMP_SUFFIX):
                pid = entry.name[len(prefix):].split(".", 1)[0]
                if pid.isdigit() and not _process_alive(int(pid)):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _filesystem_type(folder: Path) -> str | None:
    """The file-system type of the mount holding ``folder`` (Linux mountinfo), or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        resolved = str(folder.resolve())
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) < 5 or not tail:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, tail.split()[0]
    return kind
