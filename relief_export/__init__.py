"""relief_export: prune PyTorch models with NNrelief, compact them exactly, export to ONNX.

The public names are imported on first use, so ``relief-export --help`` (and an interrupt
during start-up) does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> module that defines it
_EXPORTS = {
    "BenchReport": ".bench", "benchmark": ".bench",
    "load_model": ".inputs", "read_model": ".inputs", "save_checkpoint": ".inputs",
    "CompactionReport": ".compile", "compact": ".compile", "compact_with_report": ".compile",
    "ReliefError": ".errors", "VerificationError": ".errors",
    "ExportReport": ".pipeline", "export_onnx": ".pipeline",
    "relief": ".prune", "relief_scores": ".prune", "relief_step": ".prune",
}

__all__ = ["BenchReport", "CompactionReport", "ExportReport", "ReliefError",
           "VerificationError", "__version__", "benchmark", "compact", "compact_with_report",
           "export_onnx", "load_model", "read_model", "relief", "relief_scores", "relief_step",
           "save_checkpoint"]

if TYPE_CHECKING:
    from .bench import BenchReport as BenchReport
    from .bench import benchmark as benchmark
    from .compile import CompactionReport as CompactionReport
    from .compile.compact import compact as compact
    from .compile.compact import compact_with_report as compact_with_report
    from .errors import ReliefError as ReliefError
    from .errors import VerificationError as VerificationError
    from .inputs import load_model as load_model
    from .inputs import read_model as read_model
    from .inputs import save_checkpoint as save_checkpoint
    from .pipeline import ExportReport as ExportReport
    from .pipeline import export_onnx as export_onnx
    from .prune.relief import relief as relief
    from .prune.relief import relief_scores as relief_scores
    from .prune.relief import relief_step as relief_step


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'relief_export' has no attribute {name!r}")
