"""Benchmarks of ONNX models (dense vs pruned), and NNrelief-like masks for models without data."""

from .report import BenchReport
from .run import benchmark

__all__ = ["BenchReport", "benchmark"]
