"""A timing cache that outlives one export (``--tune-cache FILE``): the milliseconds of each
candidate structure at each setting, per machine, so that exporting again (or another
model with the same layer shapes) times only what is new.

A time depends on the machine as much as on the candidate, so entries are kept per
*machine key*: CPU model, core count, onnxruntime version and the timing rounds; another
machine's entries are kept in the file but never used. The file is JSON::

    {"version": 1, "machines": {KEY: [[structure, batch, threads, ms], ...]}}

and is rewritten whole, atomically (never half-written)."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from ...errors import ReliefError
from ...files import check_output, write_file

VERSION = 1
Entries = dict[tuple[str, int, int], float]


def machine_key(rounds: int) -> str:
    """What a timing depends on besides the candidate."""
    import onnxruntime

    return (f"{_cpu_model()} | {os.cpu_count()} cores | onnxruntime {onnxruntime.__version__}"
            f" | {rounds} rounds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_cache_path(path: str | Path) -> Path:
    """A cache file we may read and rewrite (its folder exists and takes files)."""
    try:
        return check_output(path)
    except ReliefError as error:
        raise ReliefError(f"--tune-cache: {error}") from None


def load_cache(path: Path, machine: str) -> Entries:
    """This machine's entries; none when the file does not exist yet."""
    document = _read(path)
    rows = document["machines"].get(machine, [])
    entries: Entries = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str)
                and all(isinstance(v, int) and v > 0 for v in row[1:3])
                and isinstance(row[3], (int, float)) and math.isfinite(row[3]) and row[3] > 0):
            raise _damaged(path, f"entry {row!r} is not [structure, batch, threads, ms]")
        entries[(row[0], row[1], row[2])] = float(row[3])
    return entries


def save_cache(path: Path, machine: str, entries: Entries) -> None:
    """Merge ``entries`` into the file's section for ``machine`` and rewrite it."""
    document = _read(path)
    known = {(r[0], r[1], r[2]): r[3] for r in document["machines"].get(machine, [])}
    known.update(entries)
    document["machines"][machine] = [[k[0], k[1], k[2], ms] for k, ms in sorted(known.items())]
    write_file(path, json.dumps(document, indent=0).encode())


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": VERSION, "machines": {}}
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"not readable JSON ({error})") from None
    if not isinstance(document, dict) or document.get("version") != VERSION or \
            not isinstance(document.get("machines"), dict) or \
            not all(isinstance(rows, list) for rows in document["machines"].values()):
        raise _damaged(path, f"not a version-{VERSION} relief_export timing cache")
    return document


def _damaged(path: Path, why: str) -> ReliefError:
    return ReliefError(f"timing cache {path}: {why}; delete it (it is rebuilt) or name "
                       "another --tune-cache")
