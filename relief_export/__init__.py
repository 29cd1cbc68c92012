"""relief_export: prune PyTorch models with NNrelief, compact them exactly, export to ONNX."""

__version__ = "0.1.0"

from .checkpoint import load_model, read_model, save_checkpoint
from .errors import ReliefError, VerificationError

__all__ = ["ReliefError", "VerificationError", "__version__", "load_model", "read_model",
           "save_checkpoint"]
