"""NNrelief pruning and the training loop it fine-tunes with."""

from .relief import ReliefConfig, ReliefResult, relief, relief_scores, relief_step
from .train import FitConfig, evaluate, fit

__all__ = ["FitConfig", "ReliefConfig", "ReliefResult", "evaluate", "fit", "relief",
           "relief_scores", "relief_step"]
