"""Keeping library chatter off the terminal: torch, torch.onnx and onnxscript log warnings,
progress and whole tracebacks meant for their developers; our errors are one line.
``RELIEF_EXPORT_DEBUG=1`` lets errors through (to see where something failed)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

# "" is the root logger, where onnxruntime.quantization writes its advice
LOGGERS = ("torch", "onnxscript", "onnx_ir", "")


@contextlib.contextmanager
def quiet_libraries(*, stdout: bool = False) -> Iterator[None]:
    """Silence the libraries' loggers and warnings (and their prints, with ``stdout``)."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    level = logging.ERROR if os.environ.get("RELIEF_EXPORT_DEBUG") else logging.CRITICAL + 1
    try:
        for logger in loggers:
            logger.setLevel(level)
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            if stdout:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            yield
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.setLevel(previous)


@contextlib.contextmanager
def current_folder_importable() -> Iterator[None]:
    """The current folder on ``sys.path`` while active, as ``python -m`` has it, so modules
    beside the user's script import (trusted pickles, --allow-factory)."""
    added = "" not in sys.path
    if added:
        sys.path.insert(0, "")
    try:
        yield
    finally:
        if added:
            sys.path.remove("")


def not_importable(error: ModuleNotFoundError) -> str:
    """What to tell a user whose file names a module Python cannot import."""
    return (f"module {error.name!r}, which is not importable; run from the folder that holds "
            "it or add that folder to PYTHONPATH")
