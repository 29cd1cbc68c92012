"""relief_export: prune PyTorch models with NNrelief, compact them exactly, export to ONNX."""

__version__ = "0.1.0"

from .bench import BenchReport, benchmark
from .checkpoint import load_model, read_model, save_checkpoint
from .compile import CompactionReport, compact, compact_with_report
from .errors import ReliefError, VerificationError
from .onnx import ExportReport, export_onnx
from .prune import relief, relief_scores, relief_step

__all__ = ["BenchReport", "CompactionReport", "ExportReport", "ReliefError",
           "VerificationError", "__version__", "benchmark", "compact", "compact_with_report",
           "export_onnx", "load_model", "read_model", "relief", "relief_scores", "relief_step",
           "save_checkpoint"]
