"""Progress of long loops: a tqdm bar on a terminal; elsewhere (CI logs, nohup, schedulers)
one plain line on stderr when the loop starts, then at most every ``RELIEF_EXPORT_PROGRESS_SECONDS``
(default 30) and when it ends; nothing at all after ``set_quiet(True)`` (``--quiet``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def progress(iterable: Iterable[Item], *, desc: str, unit: str = "it",
             enabled: bool = True, leave: bool = True) -> Progress[Item]:
    """Iterate ``iterable`` showing progress as described above (``enabled=False``: silent)."""
    return Progress(iterable, desc, unit, enabled and not is_quiet(), leave)


class Progress(Generic[Item]):
    """An iterable with ``set_postfix(**values)``, shown as a bar or as plain lines."""

    def __init__(self, iterable: Iterable[Item], desc: str, unit: str, enabled: bool,
                 leave: bool) -> None:
        self.items = iterable
        self.desc, self.unit = desc, unit
        self.total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        self.postfix: dict[str, Any] = {}
        self.bar: Any = None
        self.plain = enabled and not sys.stderr.isatty()
        if enabled and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(iterable, desc=desc, unit=unit, leave=leave)
        self.interval = float(os.environ.get("RELIEF_EXPORT_PROGRESS_SECONDS", "30"))

    def __iter__(self) -> Iterator[Item]:
        if self.bar is not None:
            yield from self.bar
            return
        start = last = time.monotonic()
        done = 0
        if self.plain:
            self._line(done, 0.0)
        for item in self.items:
            yield item
            done += 1
            now = time.monotonic()
            if self.plain and (now - last >= self.interval or done == self.total):
                self._line(done, now - start)
                last = now

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def _line(self, done: int, seconds: float) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done}{total} {self.unit} ({seconds:.0f} s{extra})",
              file=sys.stderr, flush=True)
